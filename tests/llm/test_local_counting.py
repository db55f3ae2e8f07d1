"""The embedded model counts tokens with its own tokenizer; the estimate stays above it."""

import pytest

from keel.llm import ModelSettings, SystemMessage, ToolDefinition, UserMessage
from keel.llm.local import LlamaCppModel
from keel.llm.tokens import estimate_message_tokens, estimate_tokens

pytestmark = pytest.mark.slow

PROSE = (
    "Keel assembles every prompt under a token budget. Old turns are summarised, tool output is "
    "cut in the middle, and the most relevant notes sit at the start and the end of the context."
)


@pytest.fixture(scope="module")
def model() -> LlamaCppModel:
    return LlamaCppModel(context_size=1024, threads=1, max_tokens=4)


async def test_prompt_count_matches_the_runtime(model: LlamaCppModel) -> None:
    messages = [SystemMessage(content="Be brief."), UserMessage(content=PROSE)]
    counted = await model.count_tokens(messages)
    response = await model.request(messages, settings=ModelSettings(max_tokens=4))
    assert counted == response.usage.input_tokens
    # Offered tools add the local model's tool instructions to the prompt, and are counted.
    tool = ToolDefinition(name="lookup", description="Look a word up")
    assert await model.count_tokens(messages, tools=[tool]) > counted + 20
    assert model.context_window == 1024


async def test_the_estimate_over_counts_english(model: LlamaCppModel) -> None:
    exact = await model.count_text_tokens(PROSE)
    assert 0 < exact < estimate_tokens(PROSE)
    # With a system message: SmolLM2's template adds a default one when there is none.
    messages = [SystemMessage(content="Be brief."), UserMessage(content=PROSE)]
    assert await model.count_tokens(messages) < estimate_message_tokens(messages)
