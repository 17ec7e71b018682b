"""The model client: the only package that talks to the OpenAI SDK (`client.py`)."""
