"""Request bodies the server accepts: one pydantic model per OpenAI endpoint, unknown fields refused.

The task endpoints' bodies are the tasks' own (``Task.request``, fields named by input role), each
joined with :class:`Request` (the served ``model``'s id, unknown fields refused) by
:mod:`hf_toolkit.serving.task_api`.

Types are strict (``"max_tokens": "3"`` is refused, as is a float that is not finite) and static
bounds (``max_tokens >= 1``, ``0 <= temperature <= 2``) live here; the bounds an
operator sets (``hftk serve --max-tokens-limit`` and the like) are checked by
:mod:`hf_toolkit.serving.limits`. The OpenAI endpoints take the OpenAI field names; OpenAI fields
hftk does not implement (``logprobs``, ``echo``, ``best_of``, ...) are refused by name rather
than silently ignored; so are prompts given as token ids. Responses are the ``openai`` package's
own types (see :mod:`hf_toolkit.serving.openai_api`).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# OpenAI request fields hftk serve does not implement: refused by name (400), never silently ignored.
UNSUPPORTED = ("best_of", "echo", "logprobs", "top_logprobs", "logit_bias", "suffix", "presence_penalty",
               "frequency_penalty", "tools", "tool_choice", "functions", "function_call",
               "response_format", "parallel_tool_calls")

Texts = Union[str, list[str]]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: Optional[str] = Field(None, description="The served model's id (GET /v1/models); optional.")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            named = [key for key in UNSUPPORTED if key in data and key not in cls.model_fields]
            if named:
                raise ValueError(f"{', '.join(named)}: OpenAI field{'s' if len(named) > 1 else ''} not supported by "
                                 "hftk serve; remove it")
        return data


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class Decoding(Request):
    """The OpenAI decoding fields, mapped onto hftk's generation options (hf_toolkit.serving.openai_api)."""

    max_tokens: Optional[int] = Field(None, ge=1, description="New tokens per sequence (default: the run's generation config).")
    temperature: Optional[float] = Field(None, ge=0, le=2, allow_inf_nan=False,
                                         description="0: greedy; > 0: sampling at that temperature.")
    top_p: Optional[float] = Field(None, gt=0, le=1, allow_inf_nan=False, description="Nucleus sampling.")
    n: int = Field(1, ge=1, description="Sequences per prompt (needs sampling when above 1).")
    stop: Optional[Union[str, list[str]]] = Field(None, description="Up to 4 strings; the text ends before the first.")
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = Field(None, description="With stream: include_usage adds a usage chunk.")
    user: Optional[str] = None  # accepted for compatibility; not used

    @model_validator(mode="after")
    def _stops(self) -> "Decoding":
        stops = self.stops
        if len(stops) > 4:
            raise ValueError("stop: at most 4 stop strings")
        if any(not s for s in stops):
            raise ValueError("stop: a stop string may not be empty")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed with \"stream\": true")
        return self

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(Decoding):
    prompt: Texts = Field(..., description="A prompt, or a list of prompts (batched).")

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_only(cls, prompt: Any) -> Any:
        """Token-id prompts (a list of ints, or of lists of ints) get one plain sentence, not a union's four errors."""
        items = prompt if isinstance(prompt, list) else []
        if any(isinstance(item, int) or (isinstance(item, list) and item and isinstance(item[0], int)) for item in items):
            raise ValueError("prompts given as token ids are not supported by hftk serve (the run encodes its own "
                             "prompts); send the prompt as text")
        return prompt


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant", "developer"]
    content: Union[str, list[TextPart]]
    name: Optional[str] = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(Decoding):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="Same as max_tokens (the newer OpenAI name).")


def as_list(value: Texts | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)
