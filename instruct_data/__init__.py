"""instruct_data"""
