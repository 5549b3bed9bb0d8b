__all__ = ['connection']
