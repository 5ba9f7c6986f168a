// Second opinion: renders every case of tests/chat/expected.json with @huggingface/jinja (npm,
// installed into .deps/npm by tests/chat/fetch_real.sh) and counts agreement with transformers.
// Usage: node tests/chat/hf_jinja_check.cjs   (informational; the C test is the check)
const fs = require("fs");
const path = require("path");
const here = __dirname;
const { Template } = require(path.join(here, "../../.deps/npm/node_modules/@huggingface/jinja/dist/index.cjs"));
const expected = JSON.parse(fs.readFileSync(path.join(here, "expected.json"), "utf8"));
const convs = Object.fromEntries(JSON.parse(fs.readFileSync(path.join(here, "conversations.json"), "utf8")).map(c => [c.name, c]));
const templates = {};
let agree = 0, differ = 0, errAgree = 0, errDiffer = 0;
const byTemplate = {};
for (const cs of expected.cases) {
  if (!templates[cs.template]) {
    const src = fs.readFileSync(path.join(here, "templates", cs.template + ".jinja"), "utf8");
    const tokens = JSON.parse(fs.readFileSync(path.join(here, "templates", cs.template + ".tokens.json"), "utf8"));
    try { templates[cs.template] = { t: new Template(src), tokens }; } catch (e) { templates[cs.template] = { err: String(e), tokens }; }
  }
  const T = templates[cs.template];
  const conv = convs[cs.conversation];
  const ctx = { messages: conv.messages, tools: conv.tools ?? null, documents: null, add_generation_prompt: cs.add_generation_prompt, ...conv.kwargs };
  for (const [k, v] of Object.entries(T.tokens)) if (v !== null) ctx[k] = v;
  let out = null, err = null;
  try { if (T.err) throw new Error(T.err); out = T.t.render(ctx); } catch (e) { err = String(e); }
  const b = (byTemplate[cs.template] ??= { agree: 0, differ: 0 });
  if (cs.error !== undefined) { if (err !== null) { errAgree++; b.agree++; } else { errDiffer++; b.differ++; } }
  else if (out === cs.output) { agree++; b.agree++; } else { differ++; b.differ++; }
}
console.log(`@huggingface/jinja vs transformers: ${agree} renderings equal, ${differ} differ; errors: ${errAgree} agree, ${errDiffer} rendered instead`);
console.log(JSON.stringify(byTemplate));
