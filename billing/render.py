"""An issued document as HTML (one Jinja template) and as PDF (WeasyPrint)."""

from __future__ import annotations

import calendar
from functools import cache
from importlib import resources

import jinja2

from billing.invoices import CREDIT_NOTE, DEBIT_NOTE, INVOICE, MONEY_FIELDS, Document
from billing.money import text
from schemas.errors import CdrflowError

TITLES = {INVOICE: "Invoice", CREDIT_NOTE: "Credit note", DEBIT_NOTE: "Debit note"}


@cache
def _template() -> jinja2.Template:
    source = (resources.files("billing") / "templates" / "document.html").read_text("utf-8")
    # Autoescape: catalog names and addresses are text, never markup.
    return jinja2.Environment(autoescape=True).from_string(source)


def html(doc: Document) -> str:
    """The document as a standalone HTML page: company, customer, period, lines, totals."""
    last = calendar.monthrange(doc.month.year, doc.month.month)[1]
    period = (
        f"{doc.month:%B %Y} ({doc.month.isoformat()} to {doc.month.replace(day=last).isoformat()})"
    )
    issued = doc.issued_at.strftime("%Y-%m-%d %H:%M:%S UTC") if doc.issued_at else ""
    lines = [
        {
            "description": line.description,
            "calls": "" if line.calls is None else line.calls,
            "minutes": "" if line.minutes is None else text(line.minutes),
            "amount": text(line.amount),
        }
        for line in doc.lines
    ]
    return _template().render(
        doc=doc,
        title=TITLES[doc.kind],
        period=period,
        issued=issued,
        lines=lines,
        money={name: text(getattr(doc, name)) for name in MONEY_FIELDS},
        tax_percent=format(doc.tax_percent.normalize(), "f"),
        company=doc.parties.get("company") or {"name": ""},
        customer=doc.parties.get("customer") or {"name": doc.customer_id},
    )


def pdf(page: str) -> bytes:
    """An HTML page (``html``) printed to PDF."""
    try:
        import weasyprint  # a second to import: only the commands that print pay for it
    except OSError as exc:  # its C libraries are missing
        raise CdrflowError(
            f"printing PDF needs Pango ({exc}): install Debian's libpango-1.0-0 and "
            "libpangoft2-1.0-0 (`make pango`)"
        ) from None
    data: bytes = weasyprint.HTML(string=page).write_pdf()
    return data
