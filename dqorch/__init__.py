"""dqorch: the DistriQueue orchestrator."""
__version__ = "0.1.0"
