"""gateway/chat"""
