"""LLM usage beyond one task: the ledger of provider calls (``ledger``) and the users'
budgets (``budgets``, with their windows in ``windows``). A task's own usage is folded
from its events by the domain (``taskcore.domain.usage``)."""
