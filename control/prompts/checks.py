"""What a template or experiment must satisfy beyond its schema, as ``FieldError``s under a prefix.

Paths keep the documents' own (``$.variants[1].template``), re-rooted where the document sits: the admin
API's body puts it under ``document`` (``document.variants[1].template``), the YAML under
``prompts.experiments[0]``. The same checks run for both sources.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import FieldError
from control.prompts.tables import templates
from policies.prompts.documents import ExperimentDoc, TemplateDoc, parse_template_ref, semantic_errors
from policies.prompts.templates import TemplateError, compile_template

__all__ = ["at", "experiment_errors", "live_templates", "template_errors", "template_ref_errors"]


def at(prefix: str, path: str) -> str:
    """``$.variants[0].name`` re-rooted under ``prefix`` (``document.variants[0].name``)."""
    rest = path[1:] if path.startswith("$") else f".{path}"
    return f"{prefix}{rest}" if prefix else rest.lstrip(".")


def template_errors(doc: TemplateDoc, version: int, prefix: str = "document") -> list[FieldError]:
    """Semantic rules, then Jinja: the template must compile as it will in the gateway (syntax, declared
    variables, defaults of the declared type), so a template the gateway cannot use is never stored."""
    errors = [FieldError(field=at(prefix, p), message=m) for p, m in semantic_errors(doc)]
    if not errors:
        try:
            compile_template(doc, version)
        except TemplateError as err:
            errors.append(FieldError(field=at(prefix, err.path), message=err.message))
    return errors


def experiment_errors(doc: ExperimentDoc, prefix: str = "document") -> list[FieldError]:
    return [FieldError(field=at(prefix, p), message=m) for p, m in semantic_errors(doc)]


async def live_templates(conn: AsyncConnection) -> dict[str, int]:
    """Name -> latest version of every template not deleted (versions 1..latest all exist)."""
    rows = await conn.execute(select(templates.c.name, templates.c.latest_version)
                              .where(templates.c.deleted_at.is_(None)))
    return {r.name: r.latest_version for r in rows}


def template_ref_errors(doc: ExperimentDoc, live: Mapping[str, int], prefix: str = "document") -> list[FieldError]:
    """A variant's ``template`` must name a live template, and a version of it that exists."""
    errors = []
    for i, variant in enumerate(doc.variants):
        if variant.template is None:
            continue
        name, version = parse_template_ref(variant.template)
        latest = live.get(name)
        if latest is None:
            problem = f"no template named {name!r}"
        elif version is not None and version > latest:
            problem = f"template {name!r} has no version {version} (latest: {latest})"
        else:
            continue
        errors.append(FieldError(field=at(prefix, f"$.variants[{i}].template"), message=problem))
    return errors
