"""Training prompts for a chat drafter: templates x topics over MT-bench's eight categories.

The drafter learns from the target's own answers to these (`griffin-trt train --chat`), so the
prompts only need to cover the kinds of requests users send; every sentence here was written for
this project (no dataset licence involved). The held-out evaluation prompts
(benchmarks/prompts/chat_heldout.jsonl) were written separately and share no prompt with this set.

    python scripts/chat_corpus.py --out corpus.jsonl --count 2400 --seed 0
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOPICS = [
    "the ocean", "a rainy morning", "city life", "friendship", "a lost key", "the first day of school",
    "autumn leaves", "a lighthouse", "coffee", "learning to ride a bike", "a mountain village", "the night sky",
    "a robot that learns to paint", "moving to a new country", "an old library", "a garden in spring",
    "a train journey", "winter holidays", "a small bakery", "the desert", "a thunderstorm", "a family dinner",
    "a forgotten letter", "the moon", "a busy airport", "a childhood memory", "a jazz club", "a snowy forest",
    "a marathon runner", "a fishing boat", "a music festival", "time travel", "a quiet beach", "an abandoned house",
    "the last bus home", "a chess tournament", "a street market", "a scientist's discovery", "a dog and its owner",
    "a power outage", "a mountain hike", "a new job", "a birthday surprise", "an island", "a clockmaker",
]
SUBJECTS = [
    "photosynthesis", "black holes", "vaccines", "plate tectonics", "climate change", "the water cycle",
    "DNA replication", "electric circuits", "the greenhouse effect", "Newton's laws of motion", "entropy",
    "machine learning", "the immune system", "solar panels", "nuclear fission", "the periodic table",
    "antibiotic resistance", "earthquakes", "the speed of light", "evolution by natural selection", "batteries",
    "rainbows", "the human heart", "volcanoes", "magnetism", "semiconductors", "GPS", "the Doppler effect",
    "ocean tides", "cloud formation", "compound interest", "blood types", "the internet", "encryption",
    "wind turbines", "the stock market", "inflation", "supply and demand", "recycling plastics", "sleep",
]
HUMANITIES = [
    "the French Revolution", "the Renaissance", "the Industrial Revolution", "the Roman Empire", "the Cold War",
    "the printing press", "Stoicism", "utilitarianism", "the Silk Road", "the Enlightenment", "impressionism",
    "the Reformation", "ancient Egypt", "the Ottoman Empire", "the civil rights movement", "existentialism",
    "the fall of the Berlin Wall", "Greek tragedy", "the Magna Carta", "the Meiji Restoration", "baroque music",
    "the American Revolution", "Confucianism", "the Age of Exploration", "modernist literature", "democracy in Athens",
    "the Great Depression", "the invention of writing", "romanticism", "the history of the Olympic Games",
]
CODE_TASKS = [
    "reverses a string", "checks whether a number is prime", "returns the n-th Fibonacci number",
    "counts the words in a text", "removes duplicates from a list", "merges two sorted lists",
    "finds the largest element in a list", "checks whether a string is a palindrome", "computes a factorial",
    "converts Celsius to Fahrenheit", "reads a CSV file and prints each row", "sorts a list of dictionaries by a key",
    "flattens a nested list", "counts vowels in a string", "computes the average of a list of numbers",
    "finds the greatest common divisor of two numbers", "implements binary search", "validates an email address",
    "returns the second largest number in a list", "groups words by their first letter", "implements a stack",
    "transposes a matrix", "checks whether two strings are anagrams", "generates all permutations of a list",
    "computes the sum of the digits of a number", "capitalizes the first letter of each word",
    "finds the most common element in a list", "converts a decimal number to binary", "implements bubble sort",
    "parses a date string", "writes a dictionary to a JSON file", "finds all even numbers in a list",
]
LANGS = ["Python", "Python", "Python", "JavaScript", "C", "Java", "Rust", "Go"]
PERSONAS = [
    "a pirate captain", "a medieval knight", "a friendly librarian", "a detective in 1920s London", "a chef",
    "a travel guide in Rome", "a sports coach", "a wise old wizard", "an astronaut on the Moon", "a museum curator",
    "a customer service agent", "a fitness trainer", "a history teacher", "a shopkeeper", "a farmer",
]
NAMES = ["Alice", "Bob", "Maria", "Chen", "Fatima", "Lucas", "Aiko", "Omar", "Sofia", "David", "Priya", "Jonas"]
CITIES = ["Paris", "Tokyo", "Nairobi", "Lima", "Oslo", "Toronto", "Cairo", "Sydney", "Berlin", "Mumbai"]
ITEMS = ["apples", "pencils", "books", "tickets", "cupcakes", "notebooks", "oranges", "stamps"]


def writing(r: random.Random) -> str:
    t = r.choice(TOPICS)
    return r.choice([
        f"Write a short poem about {t}.", f"Write a haiku about {t}.", f"Write a short story about {t}.",
        f"Write a paragraph describing {t}.", f"Write a limerick about {t}.",
        f"Write a blog post introduction about {t}.", f"Write a diary entry about {t}.",
        f"Draft a short email inviting friends to an event about {t}.", f"Write a product description inspired by {t}.",
        f"Give me three creative titles for a story about {t}.", f"Write the opening line of a novel about {t}.",
    ])


def roleplay(r: random.Random) -> str:
    p, t = r.choice(PERSONAS), r.choice(TOPICS + SUBJECTS)
    return r.choice([
        f"Pretend you are {p}. Tell me about {t}.", f"You are {p}. Introduce yourself in a few sentences.",
        f"Act as {p} and give me advice about {t}.", f"Imagine you are {p}. Describe your typical day.",
        f"Role-play as {p} greeting a new visitor.", f"As {p}, explain {t} to a child.",
    ])


def reasoning(r: random.Random) -> str:
    t = r.choice(TOPICS + SUBJECTS)
    a, b = r.sample(NAMES, 2)
    n = r.randint(3, 9)
    return r.choice([
        f"What are the pros and cons of {t}?", f"Give three reasons why someone might care about {t}.",
        f"{a} is taller than {b}, and {b} is taller than Sam. Who is the shortest? Explain.",
        f"If all {r.choice(ITEMS)} in a box are red and one item is blue, what can we conclude?",
        f"{a} has {n} siblings. Each sibling has one child. How many nieces and nephews does {a} have?",
        f"Compare {t} with {r.choice(SUBJECTS)}. What do they have in common?",
        f"A train leaves {r.choice(CITIES)} at {n} am and travels for {n + 2} hours. At what time does it arrive?",
        f"Is it a good idea to learn about {t}? Think step by step.",
    ])


def math(r: random.Random) -> str:
    a, b, c = r.randint(2, 60), r.randint(2, 60), r.randint(2, 20)
    item = r.choice(ITEMS)
    return r.choice([
        f"What is {a} times {b}?", f"What is {a * c} divided by {c}?", f"Solve for x: {c}x + {a} = {c * b + a}.",
        f"A shop sells {c} {item} for ${a}. How much do {c * 3} {item} cost?",
        f"What is the area of a rectangle that is {a} cm long and {b} cm wide?",
        f"What is {c}% of {a * 10}?", f"Find the perimeter of a square with side {a} m.",
        f"{r.choice(NAMES)} had {a + b} {item} and gave away {b}. How many are left?",
        f"What is the average of {a}, {b} and {c}?", f"Simplify the fraction {a * c}/{b * c}.",
        f"What is {a} squared plus {b}?", f"How many minutes are there in {c} hours?",
    ])


def coding(r: random.Random) -> str:
    task, lang = r.choice(CODE_TASKS), r.choice(LANGS)
    return r.choice([
        f"Write a {lang} function that {task}.", f"How do I write a program that {task} in {lang}?",
        f"Explain how to write code that {task}, with an example in {lang}.",
        f"Write a {lang} function that {task}, and add a short test.",
        f"What is the time complexity of a function that {task}?",
    ])


def extraction(r: random.Random) -> str:
    a, b = r.sample(NAMES, 2)
    city, n = r.choice(CITIES), r.randint(2, 28)
    item = r.choice(ITEMS)
    text = r.choice([
        f"{a} met {b} in {city} on March {n}. They bought {n} {item} and left on April {n // 2 + 1}.",
        f"The conference in {city} starts on June {n}. {a} will speak first, followed by {b}. Tickets cost ${n * 5}.",
        f"{a} ordered {n} {item} for ${n * 3}. {b} delivered them to {city} two days later.",
    ])
    return r.choice([
        f"Extract all names, places and dates from this text: {text}",
        f"Summarize the following in one sentence: {text}",
        f"Return the people and the numbers mentioned in this text as JSON: {text}",
        f"List the key facts in this text as bullet points: {text}",
        f"What happened, where and when? Answer briefly. Text: {text}",
    ])


def stem(r: random.Random) -> str:
    s = r.choice(SUBJECTS)
    return r.choice([
        f"Explain {s} in simple terms.", f"What is {s} and why does it matter?", f"How does {s} work?",
        f"Give a short explanation of {s} for a high school student.", f"What are common misconceptions about {s}?",
        f"Describe an experiment that demonstrates {s}.", f"What is the history of our understanding of {s}?",
        f"Give three everyday examples of {s}.", f"What questions do scientists still ask about {s}?",
        f"Explain {s} using an analogy.", f"Write a quiz question about {s} and answer it.",
    ])


def humanities(r: random.Random) -> str:
    h = r.choice(HUMANITIES)
    return r.choice([
        f"What were the main causes of {h}?", f"Summarize the key ideas of {h}.",
        f"Why is {h} important today?", f"Describe the impact of {h} on society.",
        f"Write a short essay outline about {h}.", f"What can we learn from {h}?",
        f"Who were the most important people connected with {h}?", f"Explain {h} to someone who has never heard of it.",
        f"What are two different ways historians interpret {h}?", f"How did {h} change everyday life?",
        f"Write three discussion questions about {h}.", f"Compare {h} with {r.choice(HUMANITIES)}.",
    ])


CATEGORIES = {"writing": writing, "roleplay": roleplay, "reasoning": reasoning, "math": math, "coding": coding,
              "extraction": extraction, "stem": stem, "humanities": humanities}


def make_prompts(count: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    """`count` distinct prompts, categories in turn, none in `exclude`."""
    r = random.Random(seed)
    seen, out, names = set(exclude), [], list(CATEGORIES)
    tries = 0
    while len(out) < count:
        cat = names[len(out) % len(names)]
        p = CATEGORIES[cat](r)
        tries += 1
        if tries > 200 * count:
            raise ValueError(f"only {len(out)} distinct prompts could be made; ask for fewer")
        if p not in seen:
            seen.add(p)
            out.append({"prompt": p, "category": cat})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSONL to write ({'prompt', 'category'} per line)")
    ap.add_argument("--count", type=int, default=2400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exclude", type=Path, default=None, help="JSONL whose prompts must not be produced (the held-out set)")
    args = ap.parse_args(argv)
    exclude = set()
    if args.exclude:
        exclude = {json.loads(l)["prompt"] for l in args.exclude.read_text().splitlines() if l.strip()}
    rows = make_prompts(args.count, args.seed, exclude)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} prompts to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
