"""The engine: a user's message in, the model's reply out, both stored.

`conversation.Conversation` is the entry point every adapter drives (Telegram, the console,
the tests); `generation.ReplyWriter` is one model call with its stop and storage; `limits`,
`access` and `personas` are the rules it applies. Nothing here imports `telegram`.
"""
