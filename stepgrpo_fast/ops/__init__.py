"""stepgrpo_fast.ops"""
