"""HTTP API of the agreements service: one router per part; routes are thin (parse, call a handler).

Who may do what is decided by the domain (the aggregate knows which organisation is which side).
"""

from fastapi import APIRouter

from services.agreements.api import agreements, delivery, goals, operations, people

router = APIRouter()
for part in (agreements, goals, delivery, people, operations):
    router.include_router(part.router)

__all__ = ["router"]
