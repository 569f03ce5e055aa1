"""ebRS responses: RegistryResponse (ITI-42), AdhocQueryResponse (ITI-18) and the
RegistryErrorList both carry (ITI TF-3 4.2.4).

Status: Success when no error has severity Error (warnings may be listed); PartialSuccess when
errors and results are both present (ITI TF-3 4.2.4.2: some documents were delivered, some not);
Failure otherwise. codeContext is the error's message, location where it happened.
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from archive.errors import XdsError
from archive.model.xds_query import QueryResult, ReturnType
from archive.xds import ns
from archive.xds.ebrim import object_ref_list, registry_object_list


def severity(error: XdsError) -> str:
    return ns.SEVERITY_WARNING if error.warning else ns.SEVERITY_ERROR


def status_for(errors: Sequence[XdsError], *, delivered: bool) -> str:
    """The response status for ``errors``; ``delivered`` says whether any result goes out with them."""
    if not any(not e.warning for e in errors):
        return ns.STATUS_SUCCESS
    return ns.STATUS_PARTIAL_SUCCESS if delivered else ns.STATUS_FAILURE


def registry_error_list(parent: etree._Element, errors: Sequence[XdsError]) -> etree._Element | None:
    """Append rs:RegistryErrorList (with highestSeverity) to ``parent``; None when no errors."""
    if not errors:
        return None
    highest = ns.SEVERITY_ERROR if any(not e.warning for e in errors) else ns.SEVERITY_WARNING
    error_list = etree.SubElement(parent, ns.q(ns.RS, "RegistryErrorList"), highestSeverity=highest)
    for error in errors:
        item = etree.SubElement(
            error_list,
            ns.q(ns.RS, "RegistryError"),
            errorCode=error.code,
            codeContext=str(error) or error.code,
            severity=severity(error),
        )
        if error.location:
            item.set("location", error.location)
    return error_list


def registry_response(errors: Sequence[XdsError] = ()) -> etree._Element:
    """rs:RegistryResponse: the answer to ITI-42 (Success, or Failure with every error)."""
    response = etree.Element(
        ns.q(ns.RS, "RegistryResponse"), nsmap={"rs": ns.RS}, status=status_for(errors, delivered=False)
    )
    registry_error_list(response, errors)
    return response


def adhoc_query_response(
    result: QueryResult | None,
    *,
    return_type: ReturnType = ReturnType.LEAF_CLASS,
    composed: bool = True,
    errors: Sequence[XdsError] = (),
) -> etree._Element:
    """query:AdhocQueryResponse with the result as LeafClass objects or ObjectRefs."""
    result = result or QueryResult()
    response = etree.Element(
        ns.q(ns.QUERY, "AdhocQueryResponse"),
        nsmap={"query": ns.QUERY, "rim": ns.RIM, "rs": ns.RS},
        status=status_for(errors, delivered=len(result) > 0),
    )
    registry_error_list(response, errors)
    if return_type is ReturnType.OBJECT_REF:
        object_ref_list(response, result.entry_uuids())
    else:
        registry_object_list(
            response,
            documents=result.documents,
            submission_sets=result.submission_sets,
            folders=result.folders,
            associations=result.associations,
            composed=composed,
        )
    return response
