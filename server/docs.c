#include "server/docs.h"

/* OpenAPI 3.1. Shapes are those the handlers write; error bodies follow
 * FastAPI's ({"detail": ...}). */
static const char openapi[] =
"{\"openapi\":\"3.1.0\","
"\"info\":{\"title\":\"predictd\",\"version\":\"0.1.0\","
"\"description\":\"Serves Hugging Face models: text classification (DistilBERT), text generation (GPT-2) and image-text similarity (CLIP).\"},"
"\"paths\":{"
"\"/predict\":{\"post\":{\"summary\":\"Run the default model\","
  "\"parameters\":[{\"name\":\"text\",\"in\":\"query\",\"required\":false,\"schema\":{\"type\":\"string\"},"
  "\"description\":\"The FastAPI-compatible form: POST /predict?text=...\"}],"
  "\"requestBody\":{\"required\":false,\"content\":{\"application/json\":{\"schema\":{\"$ref\":\"#/components/schemas/PredictRequest\"}}}},"
  "\"responses\":{\"200\":{\"description\":\"Predictions\",\"content\":{\"application/json\":{\"schema\":{\"$ref\":\"#/components/schemas/Predictions\"}}}},"
  "\"413\":{\"$ref\":\"#/components/responses/Error\"},\"422\":{\"$ref\":\"#/components/responses/ValidationError\"},"
  "\"429\":{\"$ref\":\"#/components/responses/Error\"},\"503\":{\"$ref\":\"#/components/responses/Error\"}}}},"
"\"/models/{name}/predict\":{\"post\":{\"summary\":\"Run a named model\","
  "\"parameters\":[{\"name\":\"name\",\"in\":\"path\",\"required\":true,\"schema\":{\"type\":\"string\"}},"
  "{\"name\":\"text\",\"in\":\"query\",\"required\":false,\"schema\":{\"type\":\"string\"}}],"
  "\"requestBody\":{\"required\":false,\"content\":{\"application/json\":{\"schema\":{\"$ref\":\"#/components/schemas/PredictRequest\"}}}},"
  "\"responses\":{\"200\":{\"description\":\"Predictions\",\"content\":{\"application/json\":{\"schema\":{\"$ref\":\"#/components/schemas/Predictions\"}}}},"
  "\"404\":{\"$ref\":\"#/components/responses/Error\"},\"422\":{\"$ref\":\"#/components/responses/ValidationError\"},"
  "\"429\":{\"$ref\":\"#/components/responses/Error\"}}}},"
"\"/tokenize\":{\"post\":{\"summary\":\"Tokenize with the default model's tokenizer\","
  "\"requestBody\":{\"required\":true,\"content\":{\"application/json\":{\"schema\":{\"$ref\":\"#/components/schemas/TokenizeRequest\"}}}},"
  "\"responses\":{\"200\":{\"description\":\"Tokens per input\",\"content\":{\"application/json\":{\"schema\":{\"type\":\"array\"}}}},"
  "\"422\":{\"$ref\":\"#/components/responses/ValidationError\"}}}},"
"\"/models/{name}/tokenize\":{\"post\":{\"summary\":\"Tokenize with a named model's tokenizer\","
  "\"parameters\":[{\"name\":\"name\",\"in\":\"path\",\"required\":true,\"schema\":{\"type\":\"string\"}}],"
  "\"requestBody\":{\"required\":true,\"content\":{\"application/json\":{\"schema\":{\"$ref\":\"#/components/schemas/TokenizeRequest\"}}}},"
  "\"responses\":{\"200\":{\"description\":\"Tokens per input\",\"content\":{\"application/json\":{\"schema\":{\"type\":\"array\"}}}},"
  "\"404\":{\"$ref\":\"#/components/responses/Error\"},\"422\":{\"$ref\":\"#/components/responses/ValidationError\"}}}},"
"\"/models\":{\"get\":{\"summary\":\"The models served\",\"responses\":{\"200\":{\"description\":\"name, task, architecture, dtype and maximum input tokens of each model\","
  "\"content\":{\"application/json\":{\"schema\":{\"type\":\"object\",\"properties\":{\"models\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Model\"}}}}}}}}}},"
"\"/health\":{\"get\":{\"summary\":\"Readiness: 200 when every model is loaded, 503 while loading or shutting down\","
  "\"responses\":{\"200\":{\"description\":\"{\\\"status\\\":\\\"ok\\\"}\"},\"503\":{\"description\":\"{\\\"status\\\":\\\"loading\\\"} or {\\\"status\\\":\\\"stopping\\\"}\"}}}},"
"\"/metrics\":{\"get\":{\"summary\":\"Prometheus metrics (text format 0.0.4)\",\"responses\":{\"200\":{\"description\":\"Metrics\",\"content\":{\"text/plain\":{}}}}}},"
"\"/openapi.json\":{\"get\":{\"summary\":\"This document\",\"responses\":{\"200\":{\"description\":\"OpenAPI 3.1\"}}}},"
"\"/docs\":{\"get\":{\"summary\":\"A page to try the API in a browser\",\"responses\":{\"200\":{\"description\":\"HTML\",\"content\":{\"text/html\":{}}}}}}"
"},"
"\"components\":{"
"\"schemas\":{"
"\"PredictRequest\":{\"type\":\"object\",\"description\":\"{\\\"text\\\": T} answers as the transformers pipeline; {\\\"inputs\\\": T | [T...]} as text-embeddings-inference\","
  "\"properties\":{\"text\":{\"type\":\"string\"},\"inputs\":{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"array\",\"items\":{\"type\":\"string\"}}]},"
  "\"raw_scores\":{\"type\":\"boolean\",\"default\":false},\"truncate\":{\"type\":\"boolean\",\"default\":false}}},"
"\"Prediction\":{\"type\":\"object\",\"properties\":{\"label\":{\"type\":\"string\"},\"score\":{\"type\":\"number\"}}},"
"\"Predictions\":{\"oneOf\":[{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Prediction\"}},"
  "{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Prediction\"}}}]},"
"\"TokenizeRequest\":{\"type\":\"object\",\"required\":[\"inputs\"],\"properties\":{\"inputs\":{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"array\",\"items\":{\"type\":\"string\"}}]},"
  "\"add_special_tokens\":{\"type\":\"boolean\",\"default\":true}}},"
"\"Model\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"default\":{\"type\":\"boolean\"},\"loaded\":{\"type\":\"boolean\"},"
  "\"task\":{\"type\":\"string\"},\"architecture\":{\"type\":\"string\"},\"dtype\":{\"type\":\"string\"},\"max_input_tokens\":{\"type\":\"integer\"}}}"
"},"
"\"responses\":{"
"\"Error\":{\"description\":\"{\\\"detail\\\": message}\",\"content\":{\"application/json\":{\"schema\":{\"type\":\"object\",\"properties\":{\"detail\":{\"type\":\"string\"}}}}}},"
"\"ValidationError\":{\"description\":\"FastAPI-style validation error\",\"content\":{\"application/json\":{\"schema\":{\"type\":\"object\",\"properties\":{\"detail\":{}}}}}}"
"}}}";

/* A page that lists the endpoints and lets a person try /predict. Self-
 * contained (no CDN); answers are inserted with textContent, never as HTML. */
static const char docs[] =
"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
"<title>predictd API</title>\n"
"<style>body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}"
"code,pre,textarea{font:13px ui-monospace,monospace}pre{background:#f4f4f4;padding:.6rem;overflow:auto}"
"table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left}"
"textarea{width:100%;height:5rem}button{padding:.3rem 1rem}</style></head><body>\n"
"<h1>predictd</h1>\n<p>Serves Hugging Face models over HTTP. The full description is <a href=\"/openapi.json\">/openapi.json</a>.</p>\n"
"<h2>Try it</h2>\n<p><label>Model <select id=\"model\"></select></label></p>\n"
"<p><label>Request body (JSON)<textarea id=\"body\">{\"inputs\": \"a gripping, beautifully acted film\"}</textarea></label></p>\n"
"<p><button id=\"send\">POST /predict</button> <span id=\"status\"></span></p>\n<pre id=\"out\"></pre>\n"
"<h2>Endpoints</h2>\n<table><tr><th>method</th><th>path</th><th>what</th></tr>\n"
"<tr><td>POST</td><td><code>/predict?text=...</code></td><td>the FastAPI-compatible form: <code>[{\"label\",\"score\"}]</code></td></tr>\n"
"<tr><td>POST</td><td><code>/predict</code></td><td>JSON body: <code>{\"text\"}</code> or <code>{\"inputs\", \"raw_scores\", \"truncate\"}</code></td></tr>\n"
"<tr><td>POST</td><td><code>/models/NAME/predict</code></td><td>the same, for a named model</td></tr>\n"
"<tr><td>POST</td><td><code>/tokenize</code></td><td><code>{\"inputs\", \"add_special_tokens\"}</code>: tokens with byte offsets</td></tr>\n"
"<tr><td>GET</td><td><code>/models</code></td><td>the models served</td></tr>\n"
"<tr><td>GET</td><td><code>/health</code></td><td>200 when ready, 503 while loading or stopping</td></tr>\n"
"<tr><td>GET</td><td><code>/metrics</code></td><td>Prometheus metrics</td></tr>\n"
"</table>\n<script>\n"
"const $ = id => document.getElementById(id);\n"
"fetch('/models').then(r => r.json()).then(j => { for (const m of j.models) {\n"
"  const o = document.createElement('option'); o.value = m.name; o.textContent = m.name + ' (' + (m.task || 'loading') + ')';\n"
"  $('model').appendChild(o); } });\n"
"$('send').onclick = async () => {\n"
"  const url = '/models/' + encodeURIComponent($('model').value) + '/predict';\n"
"  $('status').textContent = '...';\n"
"  try { const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: $('body').value});\n"
"    $('status').textContent = r.status + ' ' + r.statusText; $('out').textContent = await r.text();\n"
"  } catch (e) { $('status').textContent = String(e); }\n"
"};\n</script></body></html>\n";

const char *srv_openapi_json(void)
{
    return openapi;
}

const char *srv_docs_html(void)
{
    return docs;
}
