"""mico_chat"""
