"""Our exception classes.

Each class's docstring is the line a chat user sees when it happens (`user_message()`), so the
wording lives next to the error and nowhere else. OpenAI exceptions are translated into these in
`llm.py` only; Telegram errors are handled in the Telegram adapter only.
"""

from __future__ import annotations

import inspect


class BotError(Exception):
    """Something went wrong on my side. Please try again."""

    @classmethod
    def user_message(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or BotError.__doc__ or "")

    def describe(self) -> str:
        """The line the user sees for this occurrence: the class's line, plus any detail."""
        return self.user_message()


class ConfigError(BotError):
    """The bot is not configured correctly. The owner has been told in the log."""


class ModelError(BotError):
    """The language model failed to answer. Please try again in a moment."""


class ModelAuthError(ModelError):
    """The bot is not configured correctly (the model service refused its credentials)."""


class ModelRateLimited(ModelError):
    """The model service is busy right now (rate limit). Please try again in a minute."""


class ModelTimeout(ModelError):
    """The model took too long to answer. Please try again."""


class ModelUnavailable(ModelError):
    """The model service is unreachable or failing right now. Please try again later."""


class ModelNotFound(ModelError):
    """The configured model does not exist on the model server. The owner has to fix the setting."""


class ContextTooLong(ModelError):
    """This conversation is too long for the model. Send /reset to start a fresh one."""

    def __init__(self, window: int | None = None, prompt_tokens: int | None = None) -> None:
        super().__init__("context length exceeded")
        self.window = window  # the server's window, where its error says it
        self.prompt_tokens = prompt_tokens  # the prompt as the server counted it, where said


class EmptyStream(ContextTooLong):
    """The model server returned an empty answer. Please try again in a moment."""

    # A 200 stream with no chunk at all, which a non-streamed probe could not explain: how
    # llama-cpp-python answers a prompt longer than its window, so it is taken as an overflow
    # once; the same again for a smaller prompt is a broken server, and this line says so.


class PromptTooLong(ModelError):
    """That message is too long for this model's context window. Please send a shorter one."""


class ModelStreamInterrupted(ModelError):
    """The answer was cut off because the connection to the model broke. Please try again."""

    def __init__(self, partial: str = "") -> None:
        super().__init__("model stream interrupted")
        self.partial = partial


class AnswerTooLong(ModelError):
    """The answer was cut off here because it grew too long."""


class AnswerTooSlow(ModelError):
    """The answer was cut off here because the model took too long to finish it."""


class EmptyCompletion(ModelError):
    """The model returned an empty answer. Please rephrase or try again."""


class ThoughtTooLong(ModelError):
    """The model spent its whole output limit thinking and wrote no answer. Please try again."""


class NothingToContinue(BotError):
    """Nothing to continue: my last answer here is complete."""


class InputTooLong(BotError):
    """That message is too long for me to read. Please shorten it."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"input over {limit} characters")
        self.limit = limit

    def describe(self) -> str:
        return f"{self.user_message()} (limit: {self.limit} characters)"


class LimitReached(BotError):
    """You have reached a usage limit. Please try again later."""

    def __init__(self, line: str, kind: str) -> None:
        super().__init__(kind)
        self.line = line  # says which limit, and when it resets
        self.kind = kind

    def describe(self) -> str:
        return self.line


class ReplyInterrupted(BotError):
    """I was restarting, so this answer was cut short. Please send your question again."""


class MessageLost(BotError):
    """I was restarting and could not answer this message in time. Please send it again."""


class NothingToRetry(BotError):
    """There is nothing to answer again yet: send me a question first."""


class NotYourQuestion(BotError):
    """Only the person who asked (or a group admin) can ask for a new answer to that."""


class AnswerNotDelivered(BotError):
    """My answer could not be delivered (Telegram did not take it). Send /retry to get it."""


class StorageError(BotError):
    """The bot's storage is failing, so your message was not saved. Please try again later."""

    def __init__(self, cause: str = "") -> None:
        super().__init__(cause)
        self.cause = cause  # what the database said, for the log (never shown to the user)


class StorageFull(StorageError):
    """The bot's storage is full, so your message was not saved. Please try again later."""


class StorageBusy(StorageError):
    """The bot's storage is busy, so your message was not saved. Please send it again."""


class AnswerNotSaved(BotError):
    """The bot's storage is failing, so this answer was not saved: I will not remember it."""


class UnsupportedMessage(BotError):
    """I can't read stickers, GIFs or videos. Send text, a voice note, a photo or a text file."""


class DatabaseUnavailable(StorageError):
    """I can't reach my database right now. Please try again in a moment."""


class DatabaseCopyRefused(BotError):
    """The database could not be copied."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def describe(self) -> str:
        return self.reason


# -- voice notes, photos and files (issue 14) ------------------------------------------------


class MediaError(BotError):
    """I couldn't read that. Please try again, or type it."""


class DownloadFailed(MediaError):
    """I couldn't download that from Telegram. Please send it again."""


class FileTooLarge(MediaError):
    """That file is too large for me: Telegram lets bots download files up to 20 MB."""


class VoiceTooLong(MediaError):
    """That recording is too long for me to listen to. Please send a shorter one, or type it."""

    def __init__(self, seconds: int, limit: int) -> None:
        super().__init__(f"{seconds} s over the {limit} s limit")
        self.seconds = seconds
        self.limit = limit

    def describe(self) -> str:
        return f"{self.user_message()} (limit: {_duration(self.limit)})"


class TranscriptionUnavailable(MediaError):
    """I can't listen to voice notes here: no speech-to-text service is set up (the owner has
    been told). Please type your message."""


class TranscriptionFailed(MediaError):
    """I couldn't transcribe that recording: the speech-to-text service failed. Please try again
    in a moment, or type it."""


class NothingHeard(MediaError):
    """I couldn't hear any words in that recording. Please try again, or type it."""


class VisionRefused(ModelError):
    """The model I use can't look at pictures (the owner has been told how to set one that can).
    Please describe it in words."""


class UnsupportedFile(MediaError):
    """I can't read that kind of file. I read text files (plain text, Markdown, CSV, JSON,
    source code), PDFs with text, and images (JPEG, PNG, WebP, GIF)."""

    def __init__(self, limit: int) -> None:
        super().__init__("unsupported file")
        self.limit = limit

    def describe(self) -> str:
        return f"{self.user_message()} Up to {self.limit:,} characters of text, or 20 MB."


class DocumentTooLong(MediaError):
    """That file has too much text for me to read. Please send a shorter one, or the part that
    matters."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"document over {limit} characters")
        self.limit = limit

    def describe(self) -> str:
        return f"{self.user_message()} (limit: {self.limit:,} characters)"


class DocumentUnreadable(MediaError):
    """I couldn't find any text in that file (a scanned PDF has only pictures of text). Please
    send it as text, or as photos."""


def _duration(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    if minutes and rest:
        return f"{minutes} min {rest} s"
    return f"{minutes} min" if minutes else f"{rest} s"


# -- start-up and process life: the operator's line, printed once before a non-zero exit -----


class StartupError(BotError):
    """The bot could not start."""

    exit_code = 1

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line

    def describe(self) -> str:
        return self.line


class StorageUnusable(StartupError):
    """The bot's database cannot be used."""


class AlreadyRunning(StartupError):
    """Another bot process already serves this database."""


class TokenRejected(StartupError):
    """Telegram rejected the bot token."""

    exit_code = 2


class TelegramRefused(StartupError):
    """Telegram refused to set the bot up (e.g. the webhook URL)."""

    exit_code = 2
