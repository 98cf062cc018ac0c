"""The one exception of mico_chat.weights."""


class WeightsError(Exception):
    """Weights are missing, incomplete, corrupt or cannot be fetched.

    The message names the folder or file concerned and says how to fix the problem.
    """
