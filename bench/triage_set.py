"""The triage benchmark's labelled tickets: customer mails with the category, queue and type
a desk settled on, generated from a seed.

The mails are those of the knowledge base's evaluation set (bench/kb_eval.py: the topics,
written as customers put things, in English and some German, with greetings, fillers
and signatures), each topic filed under the category a desk would give it, with the
queue that category goes to and the type the request is (a breakage is an incident, an
ask a request). Categories are as unevenly common as a desk's are (accounts a fifth of
all mail, Linux questions a few in a hundred). Two kinds of noise a real desk has:
agents who file the same trouble differently (NOISE of the labels are a neighbouring
category's) and mails that say nothing of their subject ("it does not work again").

Generated text is easier than real mail: the same few statements come back with other
fillers, so a model meets in testing much of what it saw in training. `unseen=True`
mails use only the statement of each topic (of those with three or more) that the
others never use: a model's accuracy on them is closer to what new phrasings get.

    tickets(seed, n) -> [Ticket(...)]   the same list for the same arguments
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from kb_eval import CLOSINGS, FILLERS, GREETINGS, NAMES, NONE, TOPICS, _fill

# category: (queue, its share of the mail, {topic: type})
CATEGORIES: dict[str, tuple[str, float, dict[str, str]]] = {
    "accounts": ("it", 0.20, {
        "password-reset": "request", "account-locked": "incident",
        "two-factor-lost": "incident", "passwort-zuruecksetzen@de": "request",
        "konto-gesperrt@de": "incident", "zwei-faktor-verloren@de": "incident"}),
    "network": ("network", 0.12, {
        "vpn-cannot-connect": "incident", "vpn-client-install": "request",
        "wifi-drops": "incident", "vpn-verbindung@de": "incident",
        "wlan-bricht-ab@de": "incident"}),
    "email": ("it", 0.12, {
        "outlook-password-prompt": "incident", "mailbox-full": "incident",
        "mailing-list-subscribe": "request", "calendar-sync": "incident",
        "outlook-kennwortabfrage@de": "incident"}),
    "printing": ("it", 0.10, {
        "printer-not-printing": "incident", "printer-paper-jam": "incident",
        "printer-add": "request", "drucker-druckt-nicht@de": "incident",
        "debian-paper-size": "request"}),
    "hardware": ("it", 0.10, {
        "laptop-slow-after-update": "incident", "docking-station-screens": "incident",
        "meeting-audio": "incident", "laptop-slow-after-update@de": "incident",
        "meeting-audio@de": "incident"}),
    "software": ("it", 0.08, {
        "software-install": "request", "licence-renewal": "incident",
        "debian-java": "request", "debian-developer-environment": "request"}),
    "applications": ("apps", 0.08, {
        "app-error-500": "incident", "data-export-incomplete": "incident",
        "portal-attachments": "incident"}),
    "billing": ("billing", 0.06, {
        "invoice-wrong-amount": "incident", "refund-request": "request",
        "rechnung-falscher-betrag@de": "incident"}),
    "files": ("it", 0.06, {
        "shared-folder-access": "request", "restore-deleted-file": "request"}),
    "onboarding": ("it", 0.03, {"new-employee-setup": "request"}),
    "linux": ("unix", 0.03, {
        t: "request" for t in TOPICS if t.startswith("debian-") and t not in (
            "debian-paper-size", "debian-java", "debian-developer-environment")}),
    "facilities": ("general", 0.02, {"none": "request", "none@de": "request"}),
}
# whom agents confuse a category with
NEIGHBOURS = {"accounts": "email", "email": "accounts", "network": "hardware",
              "hardware": "software", "software": "applications", "applications": "software",
              "printing": "hardware", "billing": "applications", "files": "accounts",
              "onboarding": "accounts", "linux": "software", "facilities": "hardware"}
NOISE = 0.05        # labels of a neighbouring category
VAGUE = 0.03        # mails that say nothing of their subject
VAGUE_TEXT = (["Problem", "Help", "Urgent!", "Question", "Not working"],
              ["It doesn't work again, same as last time.",
               "Could someone please call me back? It's about the thing we discussed.",
               "Still broken. Please help.",
               "Can you look into this today? Nothing has changed since my last mail.",
               "I have a problem and need help as soon as possible."])


@dataclass(frozen=True)
class Ticket:
    subject: str
    text: str
    category: str
    queue: str
    type: str

    @property
    def words(self) -> str:
        """What the model reads: the subject and the customer's words (core/triage.py)."""
        return f"{self.subject}\n{self.text}"


def _statements(topic: str) -> tuple[list[str], list[str]]:
    key, _, lang = topic.partition("@")
    if key == "none":
        return NONE[lang or "en"]
    return TOPICS[topic]


def _mail(rng: random.Random, topic: str, unseen: bool) -> tuple[str, str]:
    lang = topic.partition("@")[2] or "en"
    subjects, statements = _statements(topic)
    if len(statements) >= 3:
        statements = statements[-1:] if unseen else statements[:-1]
    subject = rng.choice(subjects) if rng.random() < 0.85 else rng.choice(
        ["Help", "Problem", "Question", "Support"] if lang == "en" else ["Hilfe", "Problem"])
    fillers = rng.sample(FILLERS[lang], rng.choice([0, 0, 1, 1, 2, 3]))
    body = " ".join([_fill(rng, rng.choice(statements)), *fillers])
    greeting = rng.choice(GREETINGS[lang])
    text = f"{greeting}\n\n{body}" if greeting else body
    return (_fill(rng, subject),
            f"{text}\n\n{rng.choice(CLOSINGS[lang])}\n{rng.choice(NAMES)}\n")


def tickets(seed: int = 20, n: int = 10_000, unseen: bool = False) -> list[Ticket]:
    """n labelled tickets in the order they came (oldest first)."""
    rng = random.Random(seed)
    names = sorted(CATEGORIES)
    shares = [CATEGORIES[c][1] for c in names]
    out = []
    for _ in range(n):
        category = rng.choices(names, shares)[0]
        queue, _share, topics = CATEGORIES[category]
        topic = rng.choice(sorted(topics))
        if rng.random() < VAGUE:
            subject, text = rng.choice(VAGUE_TEXT[0]), rng.choice(VAGUE_TEXT[1])
        else:
            subject, text = _mail(rng, topic, unseen)
        if rng.random() < NOISE:
            category = NEIGHBOURS[category]
            queue = CATEGORIES[category][0]
        out.append(Ticket(subject, text, category, queue, topics[topic]))
    return out
