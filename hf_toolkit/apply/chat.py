"""``hftk chat RUN``: an interactive terminal conversation with a generative run, on
:class:`hf_toolkit.apply.generation.Generator` (the run's own encoding, decoding defaults and streaming).

:class:`Chat` keeps the history and turns it into the model's prompt: the tokenizer's chat template
when it has one; otherwise plain text, the turns joined by newlines (a model trained on plain text
continues it), dropping the oldest turns until the prompt and the new tokens fit the model's context.
Models that answer rather than continue (summarization, translation) see each message alone.
:func:`run` is the loop: a prompt ``you>``, the reply streamed after ``bot>``, ``/reset`` clears the
history, ``/exit`` (or Ctrl-D) ends (exit status 0); Ctrl-C stops a reply in the middle and drops
that turn, and at the ``you>`` prompt ends the chat with status 130 (128 + SIGINT, the shell's convention).
A run that predicts rather than generates (classification, QA, fill-mask) is a user error naming
``hftk predict``, raised before any weights load.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hf_toolkit.apply.generation import DEFAULT_MAX_NEW_TOKENS, Generator, check_options
from hf_toolkit.core import modeling, rundir
from hf_toolkit.errors import HftkError

INTERRUPTED = 130  # exit status after Ctrl-C: 128 + SIGINT
USER_PROMPT = "you> "
BOT_PROMPT = "bot> "
COMMANDS = {"/reset": "clear the history", "/exit": "quit (also /quit, Ctrl-D)"}


class Chat:
    """A conversation with a loaded generator: history in, prompt text out, replies appended."""

    def __init__(self, generator: Generator, options: dict[str, Any], *, system: str | None = None, seed: int | None = None):
        self.generator, self.options, self.system, self.seed = generator, options, system, seed
        self.tokenizer = generator.tokenizer
        self.templated = getattr(self.tokenizer, "chat_template", None) is not None and generator.continues_prompt
        self.history: list[dict[str, str]] = []
        self.dropped = 0  # oldest turns left out of the last prompt to fit the context

    @property
    def mode(self) -> str:
        if not self.generator.continues_prompt:
            return "each message alone (the model answers a text rather than continuing a conversation)"
        return "the tokenizer's chat template" if self.templated else "plain prompts (the tokenizer has no chat template)"

    def reset(self) -> None:
        self.history.clear()

    def prompt(self, message: str) -> str:
        """The prompt for the history plus `message`, cut to fit the context (oldest turns first)."""
        if not self.generator.continues_prompt:
            return message
        turns = [*self.history, {"role": "user", "content": message}]
        room = self._room()
        for first in range(0, len(turns), 2):  # drop whole user/assistant exchanges, keep the new message
            text = self._render(turns[first:])
            if room is None or len(self.tokenizer(text, verbose=False)["input_ids"]) <= room or first == len(turns) - 1:
                self.dropped = first
                return text
        return self._render(turns[-1:])  # pragma: no cover - the loop returns at the last turn

    def _render(self, turns: list[dict[str, str]]) -> str:
        if self.templated:
            messages = ([{"role": "system", "content": self.system}] if self.system else []) + turns
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            bos = self.tokenizer.bos_token
            if bos and text.startswith(bos) and self._adds_bos():
                text = text[len(bos):]  # the encoding adds BOS itself
            return text
        lines = ([self.system] if self.system else []) + [turn["content"] for turn in turns]
        return "\n".join(lines) + "\n"

    def _adds_bos(self) -> bool:
        ids = self.tokenizer("a")["input_ids"]
        return bool(ids) and ids[0] == self.tokenizer.bos_token_id

    def _room(self) -> int | None:
        """Prompt tokens that leave room for the reply in the model's context (None: no limit known)."""
        context = modeling.context_length(self.generator.model.config)
        if context is None:
            return None
        config = self.generator.defaults
        new = self.options.get("max_new_tokens") or config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        return max(1, context - new)

    def reply(self, message: str, on_text: Callable[[str], None] | None = None) -> str:
        """The model's reply to `message` (streamed to `on_text` as it is produced), added to the history."""
        request = self.generator.prepare([self.prompt(message)], self.options, seed=self.seed)
        for cut in request.cuts:  # a message too long for the context on its own keeps its end
            print(f"hftk: warning: {cut.message}", file=sys.stderr)
        result = self.generator.generate(request, on_text=on_text)[0]
        text = result.text.strip()
        if self.generator.continues_prompt:
            self.history += [{"role": "user", "content": message}, {"role": "assistant", "content": text}]
        return text


def open_chat(reference: str, options: dict[str, Any], *, system: str | None = None, seed: int | None = None) -> Chat:
    """A chat with the run `reference`; user errors (not generative, bad options) before the weights load."""
    check_options({k: v for k, v in options.items() if v is not None})
    if options.get("num_beams") not in (None, 1) or options.get("num_return_sequences") not in (None, 1):
        raise HftkError("hftk chat streams one reply: no beams and one sequence")
    run = rundir.open_run(reference)
    return Chat(Generator(run), options, system=system, seed=seed)


def run(chat: Chat, *, read: Callable[[str], str] = input, write: Callable[[str], None] | None = None) -> int:
    """The terminal loop; returns the exit status: 0 at /exit, /quit or end of input, 130 at Ctrl-C at the prompt."""
    write = write or _write
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - not on every platform
        pass
    print(f"hftk: chatting with {chat.generator.run.reference} using {chat.mode}; "
          f"{', '.join(f'{c} to {what}' for c, what in COMMANDS.items())}", file=sys.stderr)
    while True:
        try:
            message = read(USER_PROMPT)
        except EOFError:
            write("\n")
            return 0
        except KeyboardInterrupt:
            write("\n")
            return INTERRUPTED
        command = message.strip().lower()
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            chat.reset()
            write("(history cleared)\n")
            continue
        if command.startswith("/"):
            write(f"(unknown command {command}; {', '.join(COMMANDS)})\n")
            continue
        if not message.strip():
            continue
        write(BOT_PROMPT)
        streamed: list[str] = []

        def show(text: str) -> None:
            streamed.append(text)
            write(text)

        try:
            text = chat.reply(message, on_text=show)
        except KeyboardInterrupt:
            write("\n(interrupted; that turn is dropped)\n")
            continue
        if not text:
            write("(no reply: the model ended at once)")
        if not "".join(streamed).endswith("\n") or not text:
            write("\n")
        if chat.dropped:
            print(f"hftk: the {chat.dropped} oldest turn(s) were left out to fit the model's context", file=sys.stderr)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
