"""The search agent's model on a real chat endpoint: the VOI paper's prompts (B.1-B.3) over a ChatBackend.

Each turn is one request: the system prompt of B.1 (with the ``<budget>`` block when the directive shows the budget,
and the controller's dynamic instruction of B.3 when it injects one), and a user turn with the question, the
trajectory so far and the B.3 output format. The trajectory lists every earlier step: its thought, its query and the
retrieved documents (``[doc ID] Title: text``), or a mark for a turn without a tool call (a verification, notes on
the documents, or no action), which :func:`read_turn` reads back. ``max_tokens`` is the directive's
allowance; the endpoint's own usage is what is charged.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from adapters.chat import ChatRequest
from runtime.types import Action, AgentModel, Directive, Hit, Message, ModelTurn, QABudget, Step, Trace, parse_turn

if TYPE_CHECKING:
    from adapters.chat import ChatBackend

__all__ = ["QA_TAG", "ChatAgentModel", "read_turn", "render_turn"]

QA_TAG = "qa-agent"  # sent as the subtask header: serve-sim answers it with its simulated search agent

SYSTEM = """You are a precise AI assistant for budget-constrained multi-hop question answering.
Rules:
- Think step by step and explicitly show your reasoning.
- In each turn, do exactly one action: either call one tool or provide the final answer.
- Follow the current dynamic instruction exactly; it defines what kind of action is allowed in this turn.
- If the instruction requires retrieval, you must produce exactly one <tool_call>.
- If the instruction requires answering, you must not call tools.
- Keep the final answer to a single short grounded span, not a full sentence.
- When you have a current best answer X, end your thought with "Confidence: C. Candidate: X", where C in [0, 1]
  is how likely X is right.
Planning: in your first turn, begin your thought with "Plan:" and a brief high-level plan: the entities,
relations or attributes that still need evidence, direct clues apart from bridge facts. Keep it abstract;
do not invent facts."""

INSTRUCTIONS = {
    Action.SEARCH: "Instruction: SEARCH.\nThe expected marginal utility of one more retrieval step is highest. You "
    "must call exactly one search tool now. Do not answer. State the most specific unresolved fact, then emit exactly "
    "one <tool_call> with a targeted, entity-specific query.",
    Action.DECOMPOSE: "Instruction: DECOMPOSE.\nThe remaining uncertainty appears to be compositional. You must call "
    "exactly one search tool now. Identify the missing bridge entity or intermediate fact and emit one <tool_call> "
    "aimed at it, not at the full question.",
    Action.ANSWER: "Instruction: ANSWER.\nAnswer commitment has higher utility-per-cost than further retrieval. Do not "
    "call tools. Verify the answer is supported by the evidence, then return <answer>FINAL_ANSWER</answer>: the "
    "shortest grounded span; yes or no for a yes/no question; only the selected option for a binary choice.",
    Action.BACKSTOP: "Instruction: BUDGET BACKSTOP.\nThe remaining budget is too small for another retrieval step. You "
    "must answer now and must not call tools. Use only the evidence already present and return "
    "<answer>FINAL_ANSWER</answer>, as short as possible.",
    Action.VERIFY: "Instruction: VERIFY.\nCheck your current candidate answer against the evidence retrieved so far. "
    "Do not call tools and do not answer. Return only <thought>Verdict: supported. Confidence: C. Candidate: "
    "X</thought>, with unsupported instead of supported if the evidence does not establish X.",
    Action.REASON: "Instruction: REASON IN DOCUMENTS.\nCondense the documents the last search returned to what the "
    "question needs. Do not call tools and do not answer. Return only <thought>Notes: the relevant sentences. "
    "Confidence: C. Candidate: X</thought>.",
}
# How the trajectory shows a step without a tool call (an answer ends the run, so none is shown).
_NO_CALL = {Action.VERIFY: "(verification)", Action.REASON: "(notes on the documents)", Action.STALL: "(no action)"}


def no_call_mark(step: Step) -> str:
    """How the trajectory marks a step that neither searched nor answered (what kind of turn it was)."""
    return _NO_CALL.get(step.action, _NO_CALL[Action.STALL])


FORMAT = """Continue reasoning. If evidence is not yet sufficient, call exactly one search tool. If evidence is
sufficient, answer now.
Output format:
<thought>your reasoning</thought>
<tool_call>search query</tool_call>
<answer>FINAL_ANSWER</answer>
Emit either <tool_call> or <answer>, not both."""


def render_turn(trace: Trace, directive: Directive, budget: QABudget) -> tuple[Message, ...]:
    """The messages of one turn (the format serve-sim's agent mode reads back)."""
    system = SYSTEM
    if directive.show_budget:
        system += (
            f"\n<budget>\nToolBudgetUsed: {budget.tool_calls - budget.tool_calls_left}/{budget.tool_calls}\n"
            f"ToolBudgetRemaining: {budget.tool_calls_left}\n"
            f"OutputTokenBudgetUsed: {budget.tokens - budget.tokens_left}/{budget.tokens}\n"
            f"OutputTokenBudgetRemaining: {budget.tokens_left}\n</budget>"
        )
    if trace.plan is not None:
        system += f"\n{trace.plan}"
    if directive.action is not None:
        system += "\n" + INSTRUCTIONS[directive.action]
    if directive.sample:
        system += f"\n{_BRANCH} {directive.sample}: take a different next step from this point than before."
    history = []
    for k, s in enumerate(trace.steps, 1):
        part = [f"Step {k}:"]
        if s.thought:
            part.append(f"<thought>{s.thought}</thought>")
        if s.query is not None:
            docs = "\n".join(f"[doc {h.id}] {h.title}: {h.text}" for h in s.hits)
            part += [f"<tool_call>{s.query}</tool_call>", f"<documents>\n{docs}\n</documents>"]
        elif s.answer is None:
            part.append(no_call_mark(s))
        history.append("\n".join(part))
    user = f"Question: {trace.question}\n\n" + ("\n\n".join(history) + "\n\n" if history else "") + FORMAT
    return (Message("system", system), Message("user", user))


class ChatAgentModel(AgentModel):
    """Args: backend: the endpoint (wrap it in :class:`adapters.resilience.Resilient`); model_id: its model."""

    def __init__(self, backend: ChatBackend, model_id: str, *, temperature: float | None = None) -> None:
        self.backend = backend
        self.model_id = model_id
        self.temperature = temperature

    async def turn(self, trace: Trace, directive: Directive, budget: QABudget) -> ModelTurn:
        request = ChatRequest(
            self.model_id, render_turn(trace, directive, budget), directive.max_tokens, 1, self.temperature, tag=QA_TAG
        )
        reply = await self.backend.complete(request)
        choice = reply.choices[0]  # the agent audits the cap on the larger of what was reported and what came
        return ModelTurn(choice.text, max(reply.output_tokens, choice.output_tokens))

    async def aclose(self) -> None:
        await self.backend.aclose()


_BRANCH = "Alternative branch"  # a tree search's new sample of a prompt (Directive.sample)
_STEP = re.compile(r"^Step \d+:\n", re.MULTILINE)
_DOC = re.compile(r"^\[doc (\S+)\] (.*?): (.*)$", re.MULTILINE)
_BUDGET = re.compile(r"(ToolBudgetUsed|OutputTokenBudgetUsed): (\d+)/(\d+)")
_MARKS = {mark: action for action, mark in _NO_CALL.items()}
_DIRECTIVES = {text.split("\n")[0]: action for action, text in INSTRUCTIONS.items()}  # "Instruction: SEARCH." -> ...


def read_turn(system: str, user: str, max_tokens: int) -> tuple[Trace, Directive, QABudget]:
    """The trace, directive and budget a prompt of :func:`render_turn` was made from (serve-sim's agent mode)."""
    head, _, rest = user.partition("\n\n")
    trace = Trace(head.removeprefix("Question: ").strip())
    for block in _STEP.split(rest)[1:]:
        block = block.split("\n\nContinue reasoning.")[0]
        parsed = parse_turn(block)
        hits = tuple(Hit(m.group(1), m.group(2), m.group(3), 0.0) for m in _DOC.finditer(block))
        action = Action.SEARCH if parsed.query is not None else _MARKS.get(block.rstrip().rsplit("\n", 1)[-1])
        trace.steps.append(
            Step(action or Action.STALL, None, 0, parsed.thought, query=parsed.query, hits=hits,
                 candidate=parsed.candidate, confidence=parsed.confidence, verdict=parsed.verdict)
        )  # fmt: skip
        for h in hits:
            trace.evidence.setdefault(h.id, h)
    directive = next((a for text, a in _DIRECTIVES.items() if text in system), None)
    used = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in _BUDGET.finditer(system)}
    tools_used, tools = used.get("ToolBudgetUsed", (0, 1))
    tokens_used, tokens = used.get("OutputTokenBudgetUsed", (0, max_tokens))
    budget = QABudget(tools, tokens, tools - tools_used, tokens - tokens_used)
    branch = re.search(rf"^{_BRANCH} (\d+):", system, re.MULTILINE)
    sample = int(branch.group(1)) if branch else 0
    return trace, Directive(directive, max_tokens, show_budget="<budget>" in system, sample=sample), budget
