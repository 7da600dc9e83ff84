"""CLIP through HTTP: the zero-shot golden in JSON and as a file upload,
image x text logits, embeddings, and every bad upload answered, not crashed."""

import base64
import json
import os
import struct
import zlib

from harness import REPO, check, close, config, eq, expect, load_json, test

CLIP = os.path.join(REPO, "tests", "fixtures", "clip-tiny")
GOLDEN_DIR = os.path.join(REPO, "tests", "fixtures", "golden")
GOLDEN = load_json(os.path.join(GOLDEN_DIR, "clip.json"))

config("clip", ["--model", "clip=" + CLIP, "--max-image-bytes", "2000000",
                "--max-image-pixels", "4000000"])


def b64(path):
    with open(os.path.join(GOLDEN_DIR, path), "rb") as f:
        return base64.b64encode(f.read()).decode()


def post_json(d, path, obj):
    return d.post(path, body=json.dumps(obj, ensure_ascii=False).encode("utf-8"))


@test(daemon="clip")
def clip_zero_shot_golden(d):
    z = GOLDEN["zero_shot"]
    r = post_json(d, "/predict", {"inputs": b64(z["image"]), "parameters": {
        "candidate_labels": z["candidate_labels"], "hypothesis_template": z["hypothesis_template"]}})
    eq(r.status, 200, "status (%r)" % r.body[:200])
    got = r.json()
    eq([p["label"] for p in got], [p["label"] for p in z["pipeline_output"]], "labels by score")
    for g, w in zip(got, z["pipeline_output"]):
        close(g["score"], w["score"], 1e-4, "score of %s" % w["label"])


@test(daemon="clip")
def clip_zero_shot_label_with_nul(d):
    # A label is echoed whole, a NUL and what follows included (it was cut).
    labels = ["a cat\u0000 on a mat", "a dog"]
    r = post_json(d, "/predict", {"inputs": b64(GOLDEN["zero_shot"]["image"]),
                                  "parameters": {"candidate_labels": labels}})
    eq(r.status, 200, "status (%r)" % r.body[:200])
    eq(sorted(p["label"] for p in r.json()), sorted(labels), "the labels as sent")


def post_upload(d, image, labels, template):
    boundary = "----predictdtest"
    parts = [("image", "x.png", image), ("candidate_labels", None, ",".join(labels).encode()),
             ("hypothesis_template", None, template.encode())]
    body = b""
    for name, filename, data in parts:
        body += b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\"" + name.encode() + b"\""
        body += (b"; filename=\"" + filename.encode() + b"\"\r\nContent-Type: image/png") if filename else b""
        body += b"\r\n\r\n" + data + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    return d.post("/predict", body=body, headers={"Content-Type": "multipart/form-data; boundary=" + boundary})


@test(daemon="clip")
def clip_zero_shot_multipart_equals_json(d):
    z = GOLDEN["zero_shot"]
    with open(os.path.join(GOLDEN_DIR, z["image"]), "rb") as f:
        image = f.read()
    # The golden template, and one longer than a fixed buffer once held (cut
    # there, it lost its "{}" and every label became the same text).
    for template in [z["hypothesis_template"], " " * 600 + z["hypothesis_template"]]:
        r = post_upload(d, image, z["candidate_labels"], template)
        eq(r.status, 200, "status (%r)" % r.body[:200])
        want = post_json(d, "/predict", {"inputs": b64(z["image"]), "parameters": {
            "candidate_labels": z["candidate_labels"], "hypothesis_template": template}})
        eq(r.json(), want.json(), "the upload answers as the JSON request (template of %d bytes)"
           % len(template))
        check(len({p["score"] for p in r.json()}) > 1, "labels told apart: %r" % r.body)


@test(daemon="clip")
def clip_label_counts(d):
    image = b64(GOLDEN["zero_shot"]["image"])
    for labels in [["l%d" % i for i in range(33)], ",".join("l%d" % i for i in range(300)),
                   ["l%d" % i for i in range(257)]]:
        n = len(labels) if isinstance(labels, list) else 300
        r = post_json(d, "/predict", {"inputs": image, "parameters": {"candidate_labels": labels}})
        eq(r.status, 422, "%d labels" % n)
        eq(r.json()["detail"], "Input validation error: `candidate_labels` holds %d items, at most 32 "
           "are allowed in one request" % n, "the 422 for %d labels" % n)
    r = post_json(d, "/predict", {"inputs": image, "parameters": {"candidate_labels": []}})
    eq(r.status, 422, "no labels")
    r = post_json(d, "/embed", {"inputs": ["t"] * 33})
    eq(r.json()["detail"], "Input validation error: `inputs` holds 33 items, at most 32 are "
       "allowed in one request", "33 texts to embed")


config("clip_short", ["--model", "clip=" + CLIP, "--max-input-tokens", "8"])


@test(daemon="clip_short")
def clip_max_input_tokens(d):
    # --max-input-tokens lowers the texts' limit below CLIP's 77: cut by
    # default, a 422 with "truncate": false, and /models says so.
    long_text = "one two three four five six seven eight nine ten"
    r = post_json(d, "/embed", {"inputs": [long_text], "truncate": False})
    # The classification routes' words: field, limit, count and the way out.
    expect(r, 422, '{"detail":"Input validation error: `inputs` must have at most 8 tokens. '
                   'Given: 12 (send \\"truncate\\": true to cut it)"}')
    cut = post_json(d, "/embed", {"inputs": [long_text]})
    eq(cut.status, 200, "cut by default")
    # Cut to 8 tokens (start, six words, end): as if only those were sent.
    want = post_json(d, "/embed", {"inputs": ["one two three four five six"]})
    eq(cut.json(), want.json(), "the cut text's embedding")
    eq(d.get("/models").json()["models"][0]["max_input_tokens"], 8, "/models")


@test(daemon="clip")
def clip_logits_golden(d):
    images = [f for f in GOLDEN["image_files"]]
    r = post_json(d, "/predict", {"images": [b64(f) for f in images], "texts": GOLDEN["texts"]})
    eq(r.status, 200, "status (%r)" % r.body[:200])
    got = r.json()
    tol = 1e-4 * max(1.0, GOLDEN["logit_scale_exp"] / 10)
    # The JPEG goes through libjpeg-turbo here, as through Pillow for the goldens.
    for i, row in enumerate(GOLDEN["logits_per_image"]):
        for j, v in enumerate(row):
            close(got["logits_per_image"][i][j], v, tol, "logits_per_image[%d][%d]" % (i, j))
            close(got["logits_per_text"][j][i], v, tol, "logits_per_text[%d][%d]" % (j, i))


@test(daemon="clip")
def clip_embeddings_golden(d):
    r = post_json(d, "/embed", {"inputs": GOLDEN["texts"]})
    eq(r.status, 200, "status")
    for i, (got, want) in enumerate(zip(r.json(), GOLDEN["text_embeds"])):
        for k in range(len(want)):
            close(got[k], want[k], 1e-4, "text_embeds[%d][%d]" % (i, k))
    r = post_json(d, "/embed", {"images": [b64(GOLDEN["image_files"][0])]})
    eq(r.status, 200, "status")
    for k, v in enumerate(GOLDEN["image_embeds"][0]):
        close(r.json()[0][k], v, 1e-4, "image_embeds[0][%d]" % k)


def png_bomb(w, h):
    """A small PNG that claims w x h pixels: a decompression bomb, refused
    from its header before any pixel memory is allocated."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


@test(daemon="clip")
def clip_bad_images_answered(d):
    with open(os.path.join(GOLDEN_DIR, "images", "gray_256x320.png"), "rb") as f:
        good = f.read()
    labels = {"candidate_labels": ["a", "b"]}
    cases = [(b"", 422, "empty"), (b"not an image at all", 422, "not an image"),
             (good[:len(good) // 2], 422, "truncated PNG"), (good[:40], 422, "cut after the header"),
             (png_bomb(100000, 100000), 413, "decompression bomb"),
             (b"\xff\xd8\xff\xe0" + b"\x00" * 50, 422, "corrupt JPEG")]
    for data, status, what in cases:
        r = post_json(d, "/predict", {"inputs": base64.b64encode(data).decode(), "parameters": labels})
        eq(r.status, status, "%s (%r)" % (what, r.body[:200]))
        check("detail" in r.json(), "%s: a JSON detail" % what)
    r = post_json(d, "/predict", {"inputs": "@@not base64@@", "parameters": labels})
    eq(r.status, 422, "invalid base64")
    r = post_json(d, "/predict", {"inputs": base64.b64encode(b"\0" * 2100000).decode(), "parameters": labels})
    eq(r.status, 413, "over --max-image-bytes")
    r = post_json(d, "/embed", {"inputs": ["a very long caption " * 30], "truncate": False})
    eq(r.status, 422, "a text over 77 tokens with truncate false")
    eq(post_json(d, "/embed", {"inputs": ["a very long caption " * 30]}).status, 200, "truncated by default")
    eq(d.get("/health").status, 200, "still healthy")
