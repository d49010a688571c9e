"""nnunet"""
