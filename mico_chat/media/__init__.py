"""mico_chat/media"""
