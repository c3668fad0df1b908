"""stepgrpo_fast.integrations"""
