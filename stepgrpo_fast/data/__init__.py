"""stepgrpo_fast.data"""
