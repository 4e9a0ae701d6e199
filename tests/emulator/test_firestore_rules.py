"""`firestore.rules`, judged by the Firestore emulator: who may read and write each collection.

The rules are loaded from the repository's `firestore.rules` into this module's own emulator
project, then real REST requests are sent as four callers: no credentials, a signed-in user
without a tenant, a member of another tenant, and a member of the tenant. The emulator judges
requests that carry an unsigned ID token (`alg: none`) by the rules, exactly as production judges
a signed one; `Bearer owner` and the server client library (our `db` fixture, which seeds and
checks the documents) bypass the rules, as the Admin SDK does in production.

Expected: members read (get and list) their own tenant's reservations and ledger; nobody else
reads anything; nobody writes anything. A refusal must be a 403 from the rules, never a 404 or a
400, so a test cannot pass because its request was malformed or its document missing.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

RULES_PATH = Path(__file__).resolve().parents[2] / "firestore.rules"
OK, FORBIDDEN = 200, 403
SEED = {"seeded": True, "status": "reserved"}


@dataclass(frozen=True)
class Collection:
    """A document path of the contract; `{tenant}` and `{id}` are filled per test."""

    name: str
    template: str
    members_read: bool

    def path(self, tenant: str, doc_id: str) -> str:
        return self.template.format(tenant=tenant, id=doc_id)


COLLECTIONS = [
    Collection("reservations", "tenants/{tenant}/execution_reservations/{id}", members_read=True),
    Collection("inflight", "tenants/{tenant}/execution_inflight/{id}", members_read=False),
    Collection("accounts", "tenants/{tenant}/accounts/{id}", members_read=False),
    Collection("ledger", "tenants/{tenant}/ledger_trades/{id}", members_read=True),
    Collection("paper-orders", "tenants/{tenant}/paper_orders/{id}", members_read=False),
    Collection(
        "tenant-kill-switch", "tenants/{tenant}/ops/execution_kill_switch", members_read=False
    ),
    Collection("global-kill-switch", "ops/execution_kill_switch", members_read=False),
    Collection("dead-letters", "execution_dead_letters/{id}", members_read=False),
    Collection("quotes", "market_quotes/{id}", members_read=False),
]

# Who is calling, relative to the tenant that owns the document.
CALLERS = ["anonymous", "signed-in-without-tenant", "member-of-another-tenant", "member"]

READ_CASES = [
    pytest.param(caller, collection, id=f"{collection.name}-by-{caller}")
    for collection in COLLECTIONS
    for caller in CALLERS
    if not (caller == "member" and collection.members_read)
]
WRITE_CASES = [
    pytest.param(caller, collection, id=f"{collection.name}-by-{caller}")
    for collection in COLLECTIONS
    for caller in CALLERS
]
MEMBER_READABLE = [pytest.param(c, id=c.name) for c in COLLECTIONS if c.members_read]


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def id_token(project: str, uid: str, tenant_id: str | None) -> str:
    """An unsigned Firebase ID token, as the emulator accepts it; `tenant_id` is the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "iat": now,
        "auth_time": now,
        "exp": now + 3600,
        "sub": uid,
        "user_id": uid,
        "firebase": {"sign_in_provider": "custom", "identities": {}},
    }
    if tenant_id is not None:
        claims["tenant_id"] = tenant_id
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


class FirestoreRest:
    """Firestore's REST API on the emulator, as an end-user client would call it."""

    def __init__(self, host: str, project: str) -> None:
        self.host = host
        self.project = project
        self.documents = f"http://{host}/v1/projects/{project}/databases/(default)/documents"

    def load_rules(self, text: str) -> None:
        url = f"http://{self.host}/emulator/v1/projects/{self.project}:securityRules"
        body = {"rules": {"files": [{"content": text}]}}
        response = self._send("PUT", url, body, token=None)
        if response.status != OK:
            raise AssertionError(f"the emulator refused firestore.rules: {response.body}")

    def get(self, path: str, token: str | None) -> Response:
        return self._send("GET", f"{self.documents}/{path}", None, token)

    def list(self, collection_path: str, token: str | None) -> Response:
        return self._send("GET", f"{self.documents}/{collection_path}", None, token)

    def create(self, path: str, token: str | None) -> Response:
        query = urllib.parse.urlencode({"currentDocument.exists": "false"})
        return self._send("PATCH", f"{self.documents}/{path}?{query}", _fields(), token)

    def update(self, path: str, token: str | None) -> Response:
        query = urllib.parse.urlencode({"currentDocument.exists": "true"})
        return self._send("PATCH", f"{self.documents}/{path}?{query}", _fields(), token)

    def delete(self, path: str, token: str | None) -> Response:
        return self._send("DELETE", f"{self.documents}/{path}", None, token)

    def collection_group_query(self, collection_id: str, token: str | None) -> Response:
        query = {
            "structuredQuery": {"from": [{"collectionId": collection_id, "allDescendants": True}]}
        }
        return self._send("POST", f"{self.documents}:runQuery", query, token)

    def _send(self, method: str, url: str, body: Any, token: str | None) -> Response:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return Response(answer.status, _json(answer.read()))
        except urllib.error.HTTPError as error:
            return Response(error.code, _json(error.read()))


def _fields() -> dict[str, Any]:
    return {
        "fields": {"status": {"stringValue": "released"}, "written_by": {"stringValue": "client"}}
    }


def _json(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    parsed = json.loads(raw)
    # runQuery answers a JSON array; wrap it so every body has one shape.
    return parsed if isinstance(parsed, dict) else {"results": parsed}


@dataclass(frozen=True)
class Scene:
    """One test's tenant, a document id, and a token for each caller."""

    tenant: str
    doc_id: str
    tokens: dict[str, str | None]


@pytest.fixture(scope="module")
def rest(firestore_emulator_host: str, firestore_project: str) -> FirestoreRest:
    """REST access to this module's emulator project, with `firestore.rules` loaded into it."""
    client = FirestoreRest(firestore_emulator_host, firestore_project)
    client.load_rules(RULES_PATH.read_text())
    return client


def make_scene(project: str) -> Scene:
    """A fresh tenant and document id, and each caller's token."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    return Scene(
        tenant=tenant,
        doc_id=f"doc-{uuid.uuid4().hex[:12]}",
        tokens={
            "anonymous": None,
            "signed-in-without-tenant": id_token(project, "user-no-tenant", None),
            "member-of-another-tenant": id_token(project, "user-other", f"{tenant}-x"),
            "member": id_token(project, "user-member", tenant),
        },
    )


@pytest.fixture(scope="module")
def read_scene(
    db: firestore.Client, rest: FirestoreRest, firestore_project: str
) -> Iterator[Scene]:
    """One tenant with a document in every collection of the contract, written by the server.

    Shared by the read tests, which change nothing while the rules hold.
    """
    shared = make_scene(firestore_project)
    refs = [db.document(c.path(shared.tenant, shared.doc_id)) for c in COLLECTIONS]
    for ref in refs:
        ref.set(SEED)
    yield shared
    for ref in refs:
        ref.delete()


@pytest.fixture
def scene(rest: FirestoreRest, firestore_project: str) -> Scene:
    """A tenant of this test's own, for the write tests."""
    return make_scene(firestore_project)


def server_view(db: firestore.Client, path: str) -> dict[str, Any] | None:
    """The document as the server sees it (None when absent)."""
    return db.document(path).get().to_dict()


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0]


@pytest.mark.parametrize("collection", MEMBER_READABLE)
def test_a_member_reads_a_document_of_their_own_tenant(
    rest: FirestoreRest, read_scene: Scene, collection: Collection
) -> None:
    path = collection.path(read_scene.tenant, read_scene.doc_id)

    response = rest.get(path, read_scene.tokens["member"])

    assert response.status == OK, response.body
    assert response.body["fields"]["seeded"] == {"booleanValue": True}


@pytest.mark.parametrize("collection", MEMBER_READABLE)
def test_a_member_lists_a_collection_of_their_own_tenant(
    rest: FirestoreRest, read_scene: Scene, collection: Collection
) -> None:
    path = collection.path(read_scene.tenant, read_scene.doc_id)

    response = rest.list(parent_of(path), read_scene.tokens["member"])

    assert response.status == OK, response.body
    assert [d["name"].rsplit("/", 1)[-1] for d in response.body["documents"]] == [read_scene.doc_id]


@pytest.mark.parametrize(("caller", "collection"), READ_CASES)
def test_a_document_is_not_readable_by_anyone_else(
    rest: FirestoreRest, read_scene: Scene, caller: str, collection: Collection
) -> None:
    path = collection.path(read_scene.tenant, read_scene.doc_id)

    response = rest.get(path, read_scene.tokens[caller])

    assert response.status == FORBIDDEN, response.body


@pytest.mark.parametrize(("caller", "collection"), READ_CASES)
def test_a_collection_is_not_listable_by_anyone_else(
    rest: FirestoreRest, read_scene: Scene, caller: str, collection: Collection
) -> None:
    path = collection.path(read_scene.tenant, read_scene.doc_id)

    response = rest.list(parent_of(path), read_scene.tokens[caller])

    assert response.status == FORBIDDEN, response.body


@pytest.mark.parametrize(("caller", "collection"), WRITE_CASES)
def test_no_client_creates_a_document(
    db: firestore.Client, rest: FirestoreRest, scene: Scene, caller: str, collection: Collection
) -> None:
    path = collection.path(scene.tenant, scene.doc_id)
    db.document(path).delete()  # the fixed-id kill switches may exist from another test

    response = rest.create(path, scene.tokens[caller])

    assert response.status == FORBIDDEN, response.body
    assert server_view(db, path) is None


@pytest.mark.parametrize(("caller", "collection"), WRITE_CASES)
def test_no_client_updates_a_document(
    db: firestore.Client, rest: FirestoreRest, scene: Scene, caller: str, collection: Collection
) -> None:
    path = collection.path(scene.tenant, scene.doc_id)
    db.document(path).set(SEED)

    response = rest.update(path, scene.tokens[caller])

    assert response.status == FORBIDDEN, response.body
    assert server_view(db, path) == SEED


@pytest.mark.parametrize(("caller", "collection"), WRITE_CASES)
def test_no_client_deletes_a_document(
    db: firestore.Client, rest: FirestoreRest, scene: Scene, caller: str, collection: Collection
) -> None:
    path = collection.path(scene.tenant, scene.doc_id)
    db.document(path).set(SEED)

    response = rest.delete(path, scene.tokens[caller])

    assert response.status == FORBIDDEN, response.body
    assert server_view(db, path) == SEED


@pytest.mark.parametrize("collection", MEMBER_READABLE)
def test_a_member_cannot_query_a_collection_group_across_tenants(
    rest: FirestoreRest, read_scene: Scene, collection: Collection
) -> None:
    collection_id = collection.template.split("/")[2]

    response = rest.collection_group_query(collection_id, read_scene.tokens["member"])

    assert response.status == FORBIDDEN, response.body


@pytest.mark.parametrize(
    "path",
    ["tenants/{tenant}", "tenants/{tenant}/not_in_the_contract/{id}"],
    ids=["tenant-document", "unknown-collection"],
)
def test_a_member_cannot_read_a_path_outside_the_contract(
    db: firestore.Client, rest: FirestoreRest, scene: Scene, path: str
) -> None:
    full_path = path.format(tenant=scene.tenant, id=scene.doc_id)
    db.document(full_path).set(SEED)

    response = rest.get(full_path, scene.tokens["member"])

    assert response.status == FORBIDDEN, response.body


def test_the_server_client_reads_and_writes_under_these_rules(
    db: firestore.Client, rest: FirestoreRest, scene: Scene
) -> None:
    ref = db.document(f"tenants/{scene.tenant}/execution_reservations/{scene.doc_id}")

    ref.set({"status": "reserved"})
    ref.update({"status": "released"})

    assert ref.get().to_dict() == {"status": "released"}
