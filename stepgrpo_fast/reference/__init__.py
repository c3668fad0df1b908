"""stepgrpo_fast.reference"""
