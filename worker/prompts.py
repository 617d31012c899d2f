"""The prompt the relevance model reads, split so the shared part comes first.

Layout (Qwen3-reranker style, the format the paper's Qwen3 model is trained on):

    [system instruction][task instruction][query]  |  [job text][answer suffix]
    \\____________ shared by all candidates ______/    \\____ per candidate ____/

Everything shared by a request's candidates is a prefix, so vLLM's automatic prefix caching computes
it once per request instead of once per candidate. The score is P(yes) at the answer position.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_INSTRUCTION = "Given a job search query, judge whether the job posting is relevant to the searcher"


@dataclass(frozen=True)
class PromptTemplate:
    prefix: str
    query_sep: str
    doc_sep: str
    suffix: str
    instruction: str = DEFAULT_INSTRUCTION

    @classmethod
    def qwen3_reranker(cls, instruction: str = DEFAULT_INSTRUCTION) -> PromptTemplate:
        return cls(
            prefix=(
                "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
                'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
                "<|im_start|>user\n<Instruct>: "
            ),
            query_sep="\n<Query>: ",
            doc_sep="\n<Document>: ",
            suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            instruction=instruction,
        )

    def shared(self, query: str) -> str:
        """The part every candidate of one query shares: instruction and query."""
        return f"{self.prefix}{self.instruction}{self.query_sep}{query}{self.doc_sep}"

    def candidate(self, doc: str) -> str:
        return f"{doc}{self.suffix}"

    def render(self, query: str, doc: str) -> str:
        return self.shared(query) + self.candidate(doc)
