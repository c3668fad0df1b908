"""stepgrpo_fast.trainer"""
