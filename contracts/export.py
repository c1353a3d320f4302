"""Write the JSON Schema of the envelope and of every event type into `contracts/schemas/`,
and the AsyncAPI document of them all into `contracts/asyncapi.yaml` (`contracts.asyncapi`).

Run ``accord-contracts export`` after changing a model and commit the result; the drift tests
compare the committed files with what the models produce.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from contracts import CONTRACTS_VERSION, REGISTRY, CloudEvent, asyncapi

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_documents() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema document, for the envelope and every registered event type."""
    documents: dict[str, dict[str, Any]] = {}
    envelope = CloudEvent.model_json_schema()
    envelope["$id"] = "https://accord.example/contracts/cloudevent.json"
    envelope["x-contracts-version"] = CONTRACTS_VERSION
    documents["cloudevent.json"] = envelope
    for model in REGISTRY:
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"https://accord.example/contracts/{model.event_type()}.json"
        schema["title"] = model.event_type()
        schema["x-routing-key"] = model.routing_key()
        schema["x-contracts-version"] = CONTRACTS_VERSION
        documents[f"{model.event_type()}.json"] = schema
    return documents


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    documents = schema_documents()
    for stale in directory.glob("*.json"):
        if stale.name not in documents:
            stale.unlink()
    written = []
    for file_name, document in documents.items():
        path = directory / file_name
        path.write_text(render(document))
        written.append(path)
    return written


def main() -> None:
    args = sys.argv[1:]
    if args not in ([], ["export"]):
        sys.exit("usage: accord-contracts [export]")
    for path in [*export(), asyncapi.export()]:
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


if __name__ == "__main__":
    main()
