"""Token ids -> streamed text: whole characters only, stop strings cut before they are sent.

A byte-level BPE token can end in the middle of a UTF-8 character (the decoded text then ends in
U+FFFD), and a stop string can span tokens. So `push` sends only the text that is certain: up to
the last whole character, and short of any tail that could still grow into a stop string. When a
stop string appears the text ends right before it and `stopped` is set; `flush` sends the held
tail at the end of a completion.
"""

from __future__ import annotations


class TextStream:
    def __init__(self, tokenizer, stop: list[str]) -> None:
        self.tok, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.text = ""  # the completion so far (cut at a stop string once one is found)
        self.sent = 0  # characters of self.text already handed out
        self.stopped = False

    def _held(self, text: str) -> int:
        """Characters at the end of text that are the start of some stop string."""
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:n]):
                    hold = n
                    break
        return hold

    def push(self, token: int) -> str:
        """Add a token; return the new text that can be sent now."""
        if self.stopped:
            return ""
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.text, self.stopped = text[:min(hits)], True
            return self._take(len(self.text))
        self.text = text
        safe = len(text.rstrip("\ufffd")) if text.endswith("\ufffd") else len(text)
        return self._take(max(self.sent, safe - self._held(text[:safe])))

    def flush(self) -> str:
        """At the end: whatever was held back."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        piece = self.text[self.sent:end]
        self.sent = max(self.sent, end)
        return piece
