"""What simulated visitors say and what scripted agents answer."""

from __future__ import annotations

import random

__all__ = ["VISITOR_NAMES", "scripted_answer", "visitor_lines"]

VISITOR_NAMES = ("Ana", "Ben", "Chloé", "Dmitri", "Esi", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lea")

_OPENINGS = ("Hello!", "Hi there.", "Good morning.", "Hi, quick question.")
_QUESTIONS = (
    "Where is my parcel? Order {order}.",
    "Can I change the delivery address for order {order}?",
    "I was charged twice for order {order}.",
    "How do I return a pair of shoes?",
    "Is the blue jacket back in stock?",
    "My discount code does not work.",
    "Can you deliver on Saturday?",
    "The app logs me out all the time.",
)
_FOLLOW_UPS = ("OK, and how long will that take?", "Could you check again?", "Is there a tracking link?", "Hmm, fine.")
_CLOSINGS = ("Thanks a lot!", "Great, thank you.", "Perfect, bye!")

_ANSWERS = (
    ("parcel", "Your parcel left the warehouse this morning; it should arrive tomorrow."),
    ("address", "Done: the new address is on the order."),
    ("charged", "I see the second charge; it is refunded, 3-5 days to show up."),
    ("return", "Print the label from your account page and drop the box at any post office."),
    ("stock", "It is back next week; I can reserve one for you."),
    ("code", "That code expired yesterday; here is a new one: SPRING10."),
    ("saturday", "Yes, Saturday delivery is available for a small fee."),
    ("logs me out", "Please update the app; version 4.2 fixes that."),
    ("how long", "Usually one or two working days."),
    ("check again", "Checked: everything is on track."),
    ("tracking", "Yes, the tracking link is in your confirmation e-mail."),
    ("thank", "You are welcome! Anything else?"),
    ("bye", "Goodbye, have a nice day!"),
)


def visitor_lines(rng: random.Random) -> list[str]:
    """A short chat: a greeting, one or two questions with follow-ups, a closing line."""
    order = rng.randrange(10000, 99999)
    lines = [rng.choice(_OPENINGS)]
    for question in rng.sample(_QUESTIONS, rng.randint(1, 2)):
        lines.append(question.format(order=order))
        if rng.random() < 0.6:
            lines.append(rng.choice(_FOLLOW_UPS))
    lines.append(rng.choice(_CLOSINGS))
    return lines


def scripted_answer(text: str) -> str:
    """A canned answer that fits ``text`` (the agent desk's non-interactive mode)."""
    lowered = text.lower()
    for keyword, answer in _ANSWERS:
        if keyword in lowered:
            return answer
    return "Hello! How can I help you today?"
