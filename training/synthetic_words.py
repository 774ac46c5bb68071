"""Vocabulary of the synthetic pair generator (``training/synthetic.py``).

Word lists only: entities of one kind, antonym and synonym pairs, the constraints and scopes
a negative adds, the wrappers a verbose positive adds, stop words and contractions. Kept apart
from the transformations so either can be read (and grown) without the other.
"""

from __future__ import annotations

# fmt: off
# Groups of interchangeable entities: swapping one for another changes the answer.
ENTITIES: tuple[tuple[str, ...], ...] = (
    ("Python", "Java", "JavaScript", "C++", "Rust", "Go", "Ruby", "PHP", "Kotlin", "Swift",
     "TypeScript", "C#", "Scala", "R"),
    ("React", "Angular", "Vue", "Django", "Flask", "Rails", "Spring", "Laravel", "FastAPI"),
    ("pandas", "numpy", "polars", "TensorFlow", "PyTorch", "Keras", "scikit-learn"),
    ("MySQL", "PostgreSQL", "MongoDB", "SQLite", "Redis", "Oracle", "Cassandra"),
    ("AWS", "Azure", "GCP", "Heroku", "DigitalOcean"),
    ("Windows", "Linux", "macOS", "Ubuntu", "Android", "iOS"),
    ("iPhone", "iPad", "MacBook", "Pixel", "Galaxy", "Kindle", "PlayStation", "Xbox"),
    ("Google", "Facebook", "Amazon", "Apple", "Microsoft", "Netflix", "Uber", "Tesla", "Twitter",
     "Instagram", "Quora", "LinkedIn", "YouTube", "WhatsApp", "Spotify"),
    ("India", "China", "USA", "Canada", "Germany", "France", "Japan", "Australia", "Brazil",
     "Pakistan", "Russia", "Mexico", "Italy", "Spain", "UK", "Ireland", "Singapore", "Dubai"),
    ("London", "Paris", "Tokyo", "Delhi", "Mumbai", "Bangalore", "Berlin", "Chicago", "Boston",
     "Sydney", "Toronto", "Seattle", "Madrid", "Rome", "Hyderabad", "Chennai", "Pune"),
    ("Trump", "Obama", "Clinton", "Modi", "Putin", "Hitler", "Lincoln", "Gandhi"),
    ("ibuprofen", "acetaminophen", "aspirin", "paracetamol", "amoxicillin", "metformin"),
    ("dog", "cat", "rabbit", "horse", "parrot", "hamster"),
    ("Visa", "Mastercard", "PayPal", "Venmo", "Bitcoin", "Ethereum"),
    ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    ("January", "February", "March", "April", "May", "June", "July", "August", "September",
     "October", "November", "December"),
    ("dollars", "euros", "pounds", "rupees", "yen"),
    ("Harvard", "Stanford", "MIT", "Oxford", "Cambridge", "Yale", "Princeton"),
    ("physics", "chemistry", "biology", "mathematics", "economics", "history", "psychology"),
    ("Excel", "Word", "PowerPoint", "Outlook", "Slack", "Zoom", "Teams", "Jira"),
    ("Chrome", "Firefox", "Safari", "Edge"),
    ("engineer", "doctor", "lawyer", "teacher", "nurse", "pilot", "accountant"),
)
ENTITY_OF = {e.lower(): group for group in ENTITIES for e in group}

# Word pairs with opposite meaning (either direction).
ANTONYMS = (
    ("increase", "decrease"), ("enable", "disable"), ("upgrade", "downgrade"), ("buy", "sell"),
    ("best", "worst"), ("advantages", "disadvantages"), ("start", "stop"), ("open", "close"),
    ("add", "remove"), ("import", "export"), ("before", "after"), ("minimum", "maximum"),
    ("cheapest", "most expensive"), ("largest", "smallest"), ("fastest", "slowest"),
    ("more", "less"), ("gain", "lose"), ("upload", "download"), ("encrypt", "decrypt"),
    ("lock", "unlock"), ("install", "uninstall"), ("subscribe", "unsubscribe"),
    ("accept", "reject"), ("strong", "weak"), ("high", "low"), ("higher", "lower"),
    ("easy", "hard"), ("good", "bad"), ("positive", "negative"), ("legal", "illegal"),
    ("private", "public"), ("above", "below"), ("inside", "outside"), ("men", "women"),
    ("male", "female"), ("boys", "girls"), ("husband", "wife"), ("rich", "poor"),
    ("hot", "cold"), ("first", "last"), ("early", "late"), ("love", "hate"), ("win", "lose"),
    ("safe", "dangerous"), ("healthy", "unhealthy"), ("pros", "cons"), ("hire", "fire"),
    ("allowed", "forbidden"), ("deposit", "withdraw"), ("lend", "borrow"), ("push", "pull"),
    ("north", "south"), ("east", "west"), ("old", "new"), ("long", "short"), ("cheap", "expensive"),
    ("success", "failure"), ("true", "false"), ("agree", "disagree"), ("like", "dislike"),
    ("happy", "sad"), ("light", "dark"), ("online", "offline"), ("join", "leave"),
)
ANTONYM_OF = {a: b for pair in ANTONYMS for a, b in (pair, pair[::-1])}

# Groups of words or phrases that can replace each other without changing the answer.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("how do i", "how can i", "how would i", "what's the way to", "how should i"),
    ("what is", "what's"), ("what are", "what're"), ("can you", "could you"),
    ("is it possible to", "can i"), ("tell me", "let me know"), ("explain", "describe"),
    ("best", "top", "greatest"), ("big", "large"), ("buy", "purchase"), ("begin", "start"),
    ("quick", "fast", "rapid"), ("quickly", "fast", "rapidly"), ("fix", "repair", "resolve"),
    ("method", "way", "approach"), ("ways", "methods"), ("help", "assist"), ("get", "obtain"),
    ("choose", "pick", "select"), ("car", "vehicle"), ("job", "position"),
    ("problem", "issue"), ("problems", "issues"), ("error", "bug"), ("use", "utilize"),
    ("make", "create"), ("build", "create"), ("learn", "study"), ("improve", "enhance"),
    ("simple", "easy"), ("difficult", "hard"), ("benefits", "advantages"),
    ("important", "crucial"), ("find", "locate"), ("show", "display"), ("need", "require"),
    ("happen", "occur"), ("reason", "cause"), ("mistakes", "errors"), ("movie", "film"),
    ("movies", "films"), ("book", "reserve"), ("cost", "price"), ("shop", "store"),
    ("kids", "children"), ("mom", "mother"), ("dad", "father"), ("smart", "intelligent"),
    ("answer", "reply"), ("correct", "right"), ("mostly", "mainly"), ("maybe", "perhaps"),
    ("delete", "remove"), ("setup", "configure"), ("set up", "configure"),
    ("phone", "smartphone"), ("laptop", "notebook"), ("money", "cash"), ("begin", "commence"),
    ("shut down", "turn off"), ("turn on", "switch on"), ("receive", "get"),
    ("tips", "advice"), ("suggest", "recommend"), ("should i", "do i need to"),
    ("possible", "feasible"), ("effect", "impact"), ("effects", "impacts"),
    ("doctor", "physician"), ("lawyer", "attorney"), ("holiday", "vacation"),
)
SYNONYM_OF = {w: group for group in SYNONYMS for w in group}

AUX = ("is", "are", "was", "were", "do", "does", "did", "can", "should", "will", "would",
        "could", "has", "have", "must")

PRONOUNS = frozenset(["i", "you", "we", "they", "he", "she", "it", "my"])
WH = frozenset(["what", "why", "how", "which", "who", "when", "where", "whom"])
# Kinds that apply to almost any text are tried after the specific ones more often.
GENERIC = frozenset(("constraint", "scope", "verbose", "terse", "typo"))

CONSTRAINTS = (
    "for a small business", "on Windows", "on a Mac", "during pregnancy", "as a contractor",
    "without a degree", "for free", "with bad credit", "if I'm under 18", "in a Docker container",
    "after surgery", "while taking antibiotics", "on a budget", "for a family of four",
    "without internet access", "in a recursive function", "for a non-native speaker",
    "with no experience", "if I'm self-employed", "on a mobile phone", "in production",
    "with diabetes", "for a startup", "in a rented apartment", "on the free plan",
    "as an international student", "without admin rights", "in less than a week",
    "for a dog", "with a criminal record", "when traveling abroad", "in a multithreaded program",
)
SCOPES = (
    ("for kids", "for adults", "for seniors", "for teenagers"),
    ("in the US", "in the UK", "in India", "in Canada", "in Europe"),
    ("this year", "last year", "next year"),
    ("today", "tomorrow", "yesterday"),
    ("in summer", "in winter"),
    ("for beginners", "for experts"),
    ("per month", "per year", "per week", "per day"),
    ("daily", "weekly", "monthly"),
    ("in the morning", "at night"),
    ("for students", "for employees", "for retirees"),
)

PREFIXES = (
    "Hi, could you tell me: ", "Quick question: ", "I was wondering, ", "Hey, ",
    "Can someone explain this? ", "I need some help. ", "Please answer briefly: ",
    "Hello! I have a question. ", "Sorry if this is a dumb question, but ", "So ",
    "Could you help me out? ", "Question for you: ",
)
SUFFIXES = (
    " Thanks!", " Thanks in advance.", " Any help is appreciated.", " Please explain.",
    " I'd appreciate a short answer.", " Thank you so much!", " Asking for a friend.", "",
)
STOP_WORDS = (
    "a an the is are was were do does did can could should would will i me my you your to "
    "of in on for and or what how why which who when where it its be there any some please "
    "with that this"
)
STOP = frozenset(STOP_WORDS.split())
CONTRACTIONS = (
    ("do not", "don't"), ("does not", "doesn't"), ("can not", "can't"), ("cannot", "can't"),
    ("is not", "isn't"), ("are not", "aren't"), ("I am", "I'm"), ("it is", "it's"),
    ("I have", "I've"), ("should not", "shouldn't"), ("will not", "won't"),
)

# fmt: on
