"""Generated job postings and search queries for the demo, tests, benchmarks and the tiny tokenizer.

Deterministic for a seed. Postings read like real ones: a title with seniority, company, location,
an intro, responsibilities, required skills, benefits and boilerplate — so the extractive summarizer
has something to compress and the boilerplate is what it should drop.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from schemas import JobPosted

ROLES: dict[str, list[str]] = {
    "Software Engineer": ["Python", "Go", "Kubernetes", "PostgreSQL", "distributed systems", "REST APIs"],
    "Data Scientist": ["Python", "SQL", "statistics", "machine learning", "A/B testing", "pandas"],
    "Machine Learning Engineer": ["PyTorch", "Python", "model serving", "CUDA", "feature stores", "MLOps"],
    "Frontend Developer": ["TypeScript", "React", "CSS", "accessibility", "web performance", "GraphQL"],
    "DevOps Engineer": ["Terraform", "AWS", "Kubernetes", "CI/CD", "Linux", "observability"],
    "Product Manager": ["roadmapping", "user research", "analytics", "stakeholder management", "agile"],
    "Registered Nurse": ["patient care", "medication administration", "BLS certification", "EHR charting"],
    "Accountant": ["GAAP", "Excel", "month-end close", "reconciliations", "tax preparation", "SAP"],
    "Sales Representative": ["B2B sales", "CRM", "negotiation", "pipeline management", "Salesforce"],
    "Mechanical Engineer": ["CAD", "SolidWorks", "FEA", "GD&T", "prototyping", "manufacturing"],
    "Graphic Designer": ["Adobe Illustrator", "Figma", "typography", "branding", "Photoshop"],
    "Warehouse Associate": ["forklift certification", "inventory", "picking and packing", "safety"],
    "Electrician": ["wiring", "NEC code", "troubleshooting", "conduit bending", "blueprints"],
    "Teacher": ["lesson planning", "classroom management", "curriculum design", "assessment"],
    "Customer Support Specialist": ["Zendesk", "ticket triage", "communication", "SLA management"],
    "Security Engineer": ["threat modeling", "SIEM", "penetration testing", "IAM", "incident response"],
}
SENIORITY = ["Junior", "", "Senior", "Staff", "Lead", "Principal"]
LOCATIONS = [
    "Berlin, Germany",
    "London, UK",
    "New York, NY",
    "San Francisco, CA",
    "Austin, TX",
    "Toronto, Canada",
    "Dublin, Ireland",
    "Remote",
    "Amsterdam, Netherlands",
    "Chicago, IL",
    "Seattle, WA",
    "Paris, France",
    "Bangalore, India",
    "Singapore",
]
COMPANIES = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Industries",
    "Wayne Logistics",
    "Hooli",
    "Vandelay Imports",
    "Soylent Foods",
    "Tyrell Systems",
    "Cyberdyne",
    "Wonka Retail",
]
INTROS = [
    "{company} is hiring a {title} to join our growing team in {location}.",
    "We are looking for a {title} who is excited about building great products.",
    "As a {title} at {company}, you will work with a collaborative, cross-functional team.",
]
DUTIES = [
    "You will own projects end to end, from design to delivery.",
    "You will collaborate with partners across the business to define priorities.",
    "You will mentor teammates and raise the bar for quality.",
    "You will work daily with {skill_a} and {skill_b}.",
    "Experience with {skill_a} is essential; familiarity with {skill_b} is a plus.",
    "You have {years} or more years of professional experience as a {role}.",
    "Strong knowledge of {skill_a} and hands-on experience with {skill_c} are required.",
    "You will improve our processes around {skill_b} and {skill_c}.",
]
BOILERPLATE = [
    "We offer a competitive salary, equity and a generous benefits package.",
    "Our office has free snacks, a gym and a rooftop terrace.",
    "We value diversity and are proud to be an equal opportunity employer.",
    "All applicants will receive consideration without regard to protected characteristics.",
    "Flexible working hours and hybrid work are available for most roles.",
    "Please submit your resume and a short cover letter through our careers page.",
    "We celebrate our wins together with quarterly team events.",
    "Relocation assistance may be available for the right candidate.",
]
QUERY_FORMS = ["{role}", "{seniority} {role}", "{role} {city}", "{skill} {role}", "{role} remote", "{skill} jobs"]


def make_posting(rng: random.Random, job_id: str, paragraphs: int = 1) -> JobPosted:
    """One posting. ``paragraphs`` scales the description: 1 ≈ 150 words, 8 ≈ 1000+ tokens."""
    role = rng.choice(list(ROLES))
    seniority = rng.choice(SENIORITY)
    title = f"{seniority} {role}".strip()
    location = rng.choice(LOCATIONS)
    company = rng.choice(COMPANIES)
    skills = ROLES[role]
    sentences: list[str] = [rng.choice(INTROS).format(company=company, title=title, location=location)]
    for _ in range(paragraphs):
        for duty in rng.sample(DUTIES, 5):
            a, b, c = rng.sample(skills, 3)
            sentences.append(
                duty.format(skill_a=a, skill_b=b, skill_c=c, role=role.lower(), years=rng.choice([2, 3, 5, 7]))
            )
        sentences.extend(rng.sample(BOILERPLATE, 4))
    sentences.append(f"Required skills: {', '.join(rng.sample(skills, min(4, len(skills))))}.")
    return JobPosted(
        job_id=job_id,
        title=title,
        company=company,
        location=location,
        description=" ".join(sentences),
        posted_at=1.7e9 + rng.randrange(10**7),
    )


def postings(n: int, seed: int = 0, paragraphs: int = 1, prefix: str = "job") -> list[JobPosted]:
    rng = random.Random(seed)
    return [make_posting(rng, f"{prefix}-{i:06d}", paragraphs) for i in range(n)]


def make_query(rng: random.Random) -> str:
    role = rng.choice(list(ROLES))
    return rng.choice(QUERY_FORMS).format(
        role=role.lower(),
        seniority=rng.choice(["senior", "junior", "lead"]),
        city=rng.choice(LOCATIONS).split(",")[0],
        skill=rng.choice(ROLES[role]),
    )


def queries(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [make_query(rng) for _ in range(n)]


def training_text(n: int = 400) -> Iterator[str]:
    """Text for training the tiny tokenizer: postings, queries and the prompt template's words."""
    from engine.prompt import PromptTemplate

    tmpl = PromptTemplate.qwen3_reranker()
    yield tmpl.prefix + tmpl.query_sep + tmpl.doc_sep + tmpl.suffix
    for p in postings(n, seed=99):
        yield f"{p.title} {p.company} {p.location} {p.description}"
    yield from queries(n, seed=99)
