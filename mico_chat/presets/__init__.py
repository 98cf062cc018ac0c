"""mico_chat/presets"""
