// Drives moetrace serve's OpenAI-compatible endpoints through OpenAI's official JS SDK (the npm
// package "openai") and checks what the SDK and its types promise, and OpenAI's API reference where
// the SDK is lenient. Run by tests/compat/openai_client.sh, which starts the server.
//
//   node openai_client.mjs   with MOETRACE_URL (http://HOST:PORT), MOETRACE_API_KEY, and the
//                            SDK found through NODE_PATH or OPENAI_SDK (the package's folder)
//
// Prints one line a check ("ok" / "not ok") and exits 1 when any check failed.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const BASE = process.env.MOETRACE_URL;
const KEY = process.env.MOETRACE_API_KEY;
if (!BASE || !KEY) {
    console.error('openai_client.mjs: set MOETRACE_URL and MOETRACE_API_KEY');
    process.exit(2);
}
const sdkDir = process.env.OPENAI_SDK;
const sdk = await import(pathToFileURL(path.join(sdkDir, 'index.mjs')).href);
const OpenAI = sdk.default;
const sdkVersion = createRequire(import.meta.url)(path.join(sdkDir, 'package.json')).version;

const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60000 });

// ---- a tiny harness ---------------------------------------------------------------------------

let failed = 0, passed = 0;
class CheckError extends Error {}
function assert(cond, what) { if (!cond) throw new CheckError(what); }
function eq(got, want, what) {
    const g = JSON.stringify(got), w = JSON.stringify(want);
    if (g !== w) throw new CheckError(`${what}: got ${g}, want ${w}`);
}
async function check(name, fn) {
    try {
        await fn();
        passed++;
        console.log(`ok - ${name}`);
    } catch (e) {
        failed++;
        const why = e instanceof CheckError ? e.message : `${e?.constructor?.name}: ${e?.message}`;
        console.log(`not ok - ${name}: ${why}`);
    }
}
async function expectError(cls, fn, what) {
    try {
        await fn();
    } catch (e) {
        assert(e instanceof cls, `${what}: threw ${e?.constructor?.name} (${e?.message}), want ${cls.name}`);
        return e;
    }
    throw new CheckError(`${what}: did not throw (want ${cls.name})`);
}

const isInt = (v) => Number.isInteger(v);
// A token's text is its id decoded alone, special tokens shown (docs/API.md); the text skips them.
const spell = (tokens) => tokens.filter((t) => !/^<\|.*\|>$/.test(t)).join('');
const FINISH = ['stop', 'length'];

// OpenAI's error object: {"message", "type", "param", "code"}, as the SDK reads it into the error.
function checkErrorShape(e, status, type) {
    eq(e.status, status, 'status');
    assert(e.error && typeof e.error === 'object', 'the error body has an "error" object');
    assert(typeof e.error.message === 'string' && e.error.message.length > 0, 'error.message is a string');
    eq(e.error.type, type, 'error.type');
    assert('param' in e.error, 'error.param is present (null or the parameter)');
    assert('code' in e.error, 'error.code is present');
    assert(e.error.param === null || typeof e.error.param === 'string', 'error.param is null or a string');
    assert(e.message.startsWith(`${status} `) && e.message.includes(e.error.message),
        `the SDK's message is "<status> <error.message>": ${e.message}`);
    eq(e.type, type, 'the SDK error .type');
}

function checkUsage(u, what) {
    assert(u && isInt(u.prompt_tokens) && isInt(u.completion_tokens) && isInt(u.total_tokens), `${what}: usage`);
    eq(u.total_tokens, u.prompt_tokens + u.completion_tokens, `${what}: total_tokens`);
}

function checkCompletion(r, nChoices) {
    eq(r.object, 'text_completion', 'object');
    assert(typeof r.id === 'string' && r.id.startsWith('cmpl-'), `id ${r.id}`);
    assert(isInt(r.created) && r.created > 1.6e9, 'created is a Unix time');
    assert(typeof r.model === 'string' && r.model.length > 0, 'model');
    eq(r.choices.length, nChoices, 'choices');
    r.choices.forEach((c, k) => {
        eq(c.index, k, `choice ${k} index`);
        assert(typeof c.text === 'string', `choice ${k} text`);
        assert(FINISH.includes(c.finish_reason), `choice ${k} finish_reason ${c.finish_reason}`);
        assert('logprobs' in c, `choice ${k} has logprobs (null when not asked)`);
    });
    checkUsage(r.usage, 'completion');
}

function checkChat(r, nChoices) {
    eq(r.object, 'chat.completion', 'object');
    assert(typeof r.id === 'string' && r.id.startsWith('chatcmpl-'), `id ${r.id}`);
    assert(isInt(r.created), 'created');
    assert(typeof r.model === 'string', 'model');
    eq(r.choices.length, nChoices, 'choices');
    r.choices.forEach((c, k) => {
        eq(c.index, k, `choice ${k} index`);
        eq(c.message.role, 'assistant', 'role');
        assert(typeof c.message.content === 'string', 'content is a string');
        assert('refusal' in c.message && c.message.refusal === null, 'message.refusal is null (a required field)');
        assert(FINISH.includes(c.finish_reason), `finish_reason ${c.finish_reason}`);
        assert('logprobs' in c, 'choice has logprobs');
    });
    checkUsage(r.usage, 'chat');
}

// Collects a stream's chunks and checks what every chunk of one response shares.
async function collect(stream, objectName) {
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert(chunks.length > 0, 'the stream has chunks');
    for (const c of chunks) {
        eq(c.object, objectName, 'chunk object');
        eq(c.id, chunks[0].id, 'chunk ids are one id');
        eq(c.created, chunks[0].created, 'chunk created is stable');
        eq(c.model, chunks[0].model, 'chunk model is stable');
        assert(Array.isArray(c.choices), 'chunk choices is a list');
    }
    return chunks;
}

// Per choice index: its chunks in order; checks finish_reason only on a choice's last chunk.
function byChoice(chunks, nChoices) {
    const per = Array.from({ length: nChoices }, () => []);
    for (const c of chunks) for (const ch of c.choices) {
        assert(isInt(ch.index) && ch.index >= 0 && ch.index < nChoices, `choice index ${ch.index}`);
        per[ch.index].push(ch);
    }
    per.forEach((list, k) => {
        assert(list.length > 0, `choice ${k} has chunks`);
        list.forEach((ch, i) => {
            if (i < list.length - 1) eq(ch.finish_reason, null, `choice ${k} chunk ${i} finish_reason`);
        });
        assert(FINISH.includes(list[list.length - 1].finish_reason), `choice ${k} ends with a finish_reason`);
    });
    return per;
}

function checkRouting(re, rows, layers, topK, experts, dtype) {
    assert(re && typeof re.data === 'string', 'routed_experts.data');
    eq(re.dtype, dtype, 'routed_experts.dtype');
    eq(re.shape, [rows, layers, topK], 'routed_experts.shape');
    const raw = Buffer.from(re.data, 'base64');
    const width = { int32: 4, int16: 2, uint8: 1 }[dtype];
    eq(raw.length, rows * layers * topK * width, 'routed_experts bytes');
    for (let i = 0; i < rows * layers * topK; i++) {
        const v = dtype === 'int32' ? raw.readInt32LE(4 * i) : dtype === 'int16' ? raw.readInt16LE(2 * i) : raw[i];
        const dense = dtype === 'uint8' ? v === 255 : v === -1;
        assert(dense || (v >= 0 && v < experts), `routed expert ${v} in range`);
    }
}

// ---- the checks ------------------------------------------------------------------------------

const info = await (await fetch(`${BASE}/get_model_info`, { headers: { Authorization: `Bearer ${KEY}` } })).json();
const MODEL_ID = (await client.models.list()).data[0]?.id;
const PROMPT = 'The cat sat';
console.log(`# openai ${sdkVersion}, node ${process.version}, ${BASE}, model ${MODEL_ID}`);

await check('models.list', async () => {
    const page = await client.models.list();
    const ids = [];
    for await (const m of page) {
        eq(m.object, 'model', 'object');
        assert(isInt(m.created), 'created');
        assert(typeof m.owned_by === 'string', 'owned_by');
        ids.push(m.id);
    }
    eq(ids.length, 1, 'one model');
    eq(ids[0], MODEL_ID, 'id');
});

await check('models.retrieve of an unknown path: NotFoundError', async () => {
    const e = await expectError(sdk.NotFoundError, () => client.models.retrieve('no-such-model'), 'retrieve');
    checkErrorShape(e, 404, 'not_found_error');
});

await check('completions: prompt string, max_tokens, usage', async () => {
    const r = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 5, temperature: 0 });
    checkCompletion(r, 1);
    assert(r.usage.completion_tokens <= 5, 'at most max_tokens');
    if (r.choices[0].finish_reason === 'length') eq(r.usage.completion_tokens, 5, 'length after max_tokens');
    eq(r.choices[0].logprobs, null, 'logprobs null when not asked');
    eq(r.model, MODEL_ID, 'model');
});

await check('completions: default max_tokens is 16', async () => {
    const r = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, temperature: 0, ignore_eos: true });
    eq(r.usage.completion_tokens, 16, 'completion_tokens');
    eq(r.choices[0].finish_reason, 'length', 'finish_reason');
});

await check('completions: temperature 0 is deterministic', async () => {
    const a = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 12, temperature: 0 });
    const b = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 12, temperature: 0 });
    eq(a.choices[0].text, b.choices[0].text, 'same text');
    assert(a.id !== b.id, 'responses have their own ids');
});

await check('completions: seed', async () => {
    const ask = (seed) => client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 12, temperature: 1,
                                                       seed, ignore_eos: true });
    const a = await ask(7), b = await ask(7);
    eq(a.choices[0].text, b.choices[0].text, 'same seed, same text');
    const texts = new Set();
    for (const s of [1, 2, 3, 4]) texts.add((await ask(s)).choices[0].text);
    assert(texts.size > 1, 'different seeds give different texts');
});

await check('completions: list of prompts', async () => {
    const r = await client.completions.create({ model: MODEL_ID, prompt: [PROMPT, 'Hello'], max_tokens: 4, temperature: 0 });
    checkCompletion(r, 2);
    const one = await client.completions.create({ model: MODEL_ID, prompt: 'Hello', max_tokens: 4, temperature: 0 });
    eq(r.choices[1].text, one.choices[0].text, 'choice 1 is the second prompt');
    eq(r.usage.prompt_tokens, (await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 1 }))
        .usage.prompt_tokens + one.usage.prompt_tokens, 'prompt_tokens of both prompts');
});

await check('completions: token-id prompts', async () => {
    const a = await client.completions.create({ model: MODEL_ID, prompt: [5, 6, 7, 8], max_tokens: 3, temperature: 0 });
    checkCompletion(a, 1);
    eq(a.usage.prompt_tokens, 4, 'prompt_tokens');
    const b = await client.completions.create({ model: MODEL_ID, prompt: [[5, 6, 7, 8], [9, 10]], max_tokens: 3,
                                                temperature: 0 });
    checkCompletion(b, 2);
    eq(b.choices[0].text, a.choices[0].text, 'the same prompt, the same text');
    eq(b.usage.prompt_tokens, 6, 'prompt_tokens of both');
});

await check('completions: n', async () => {
    const r = await client.completions.create({ model: MODEL_ID, prompt: [PROMPT, 'Hello'], n: 3, max_tokens: 6, seed: 3 });
    checkCompletion(r, 6);
});

await check('completions: stop', async () => {
    const full = (await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 16, temperature: 0,
                                                    ignore_eos: true })).choices[0].text;
    const stop = full.slice(4, 7);
    assert(stop.length === 3, `a stop string from the text ${JSON.stringify(full)}`);
    for (const s of [stop, [stop, 'zzzz-never']]) {
        const r = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 16, temperature: 0,
                                                    stop: s, ignore_eos: true });
        eq(r.choices[0].text, full.slice(0, full.indexOf(stop)), 'cut before the stop string');
        eq(r.choices[0].finish_reason, 'stop', 'finish_reason');
    }
});

await check('completions: logprobs', async () => {
    const r = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 3,
                                                ignore_eos: true });
    const lp = r.choices[0].logprobs;
    eq(lp.tokens.length, 6, 'tokens');
    eq(lp.token_logprobs.length, 6, 'token_logprobs');
    eq(lp.text_offset.length, 6, 'text_offset');
    eq(lp.top_logprobs.length, 6, 'top_logprobs');
    lp.token_logprobs.forEach((v) => assert(typeof v === 'number' && v <= 0, 'a log-probability'));
    lp.top_logprobs.forEach((t) => {
        const vals = Object.values(t);
        assert(vals.length >= 1 && vals.length <= 3, 'at most 3 alternatives');
        // greedy: the chosen token is the likeliest
    });
    lp.top_logprobs.forEach((t, i) => assert(Math.max(...Object.values(t)) >= lp.token_logprobs[i] - 1e-6,
                                             'greedy token is the likeliest'));
    eq(spell(lp.tokens), r.choices[0].text, 'tokens spell the text');
    for (let i = 1; i < 6; i++)   // characters (code points) of the text, whole tokens here
        eq(lp.text_offset[i], lp.text_offset[i - 1] + [...lp.tokens[i - 1]].length, 'text_offset');
    const zero = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 2, logprobs: 0 });
    eq(zero.choices[0].logprobs.token_logprobs.length, 2, 'logprobs 0: the chosen tokens');
});

await check('completions: echo + logprobs, max_tokens 0 (scoring)', async () => {
    const r = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 0, echo: true, logprobs: 2,
                                                temperature: 0 });
    const c = r.choices[0], lp = c.logprobs;
    eq(c.text, PROMPT, 'text is the prompt');
    eq(lp.tokens.length, r.usage.prompt_tokens, 'a token a prompt position');
    eq(lp.token_logprobs[0], null, 'the first has none');
    lp.token_logprobs.slice(1).forEach((v) => assert(typeof v === 'number' && v <= 0, 'log-probability'));
    eq(lp.tokens.join(''), PROMPT, 'tokens spell the prompt');
    eq(r.usage.completion_tokens, 0, 'completion_tokens');
    const g = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 3, echo: true, temperature: 0,
                                                ignore_eos: true });
    const plain = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 3, temperature: 0,
                                                    ignore_eos: true });
    eq(g.choices[0].text, PROMPT + plain.choices[0].text, 'echo then the completion');
});

await check('completions: suffix is refused (no fill-in-the-middle)', async () => {
    const e = await expectError(sdk.BadRequestError, () => client.completions.create({ model: MODEL_ID, prompt: PROMPT,
        suffix: ' the end', max_tokens: 4 }), 'suffix');
    checkErrorShape(e, 400, 'invalid_request_error');
    assert(e.message.includes('suffix'), 'the message names suffix');
});

await check('completions: best_of other than 1 (or n) is refused', async () => {
    const e = await expectError(sdk.BadRequestError, () => client.completions.create({ model: MODEL_ID, prompt: PROMPT,
        best_of: 3, max_tokens: 4 }), 'best_of');
    assert(e.message.includes('best_of'), 'the message names best_of');
    const ok = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, best_of: 1, max_tokens: 2 });
    checkCompletion(ok, 1);
});

await check('completions: penalties and logit_bias in range accepted, out of range refused', async () => {
    const e = await expectError(sdk.BadRequestError, () => client.completions.create({ model: MODEL_ID, prompt: PROMPT,
        presence_penalty: 2.5, max_tokens: 2 }), 'presence_penalty');
    checkErrorShape(e, 400, 'invalid_request_error');
    assert(e.message.includes('presence_penalty'), 'the message names presence_penalty');
    const bias = await expectError(sdk.BadRequestError, () => client.completions.create({ model: MODEL_ID, prompt: PROMPT,
        logit_bias: { '5': 101 }, max_tokens: 2 }), 'logit_bias');
    assert(bias.message.includes('logit_bias'), 'the message names logit_bias');
    const neutral = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, presence_penalty: 0,
                                                      frequency_penalty: 0, logit_bias: {}, user: 'someone', max_tokens: 2 });
    checkCompletion(neutral, 1);
    const ok = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, presence_penalty: 0.5,
                                                 frequency_penalty: -0.5, logit_bias: { '5': -100 }, max_tokens: 2 });
    checkCompletion(ok, 1);
});

const MESSAGES = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Say hello' }];

await check('chat: system + user, max_tokens, usage', async () => {
    const r = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 8, temperature: 0 });
    checkChat(r, 1);
    assert(r.usage.completion_tokens <= 8, 'at most max_tokens');
    eq(r.choices[0].logprobs, null, 'logprobs null when not asked');
});

await check('chat: content parts read as the joined text', async () => {
    const parts = [{ role: 'system', content: [{ type: 'text', text: 'You are terse.' }] },
                   { role: 'user', content: [{ type: 'text', text: 'Say hello' }] }];
    const a = await client.chat.completions.create({ model: MODEL_ID, messages: parts, max_tokens: 8, temperature: 0 });
    const b = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 8, temperature: 0 });
    checkChat(a, 1);
    eq(a.choices[0].message.content, b.choices[0].message.content, 'same answer');
    eq(a.usage.prompt_tokens, b.usage.prompt_tokens, 'same prompt');
    const e = await expectError(sdk.BadRequestError, () => client.chat.completions.create({ model: MODEL_ID, max_tokens: 2,
        messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }] }), 'image');
    checkErrorShape(e, 400, 'invalid_request_error');
});

await check('chat: max_completion_tokens', async () => {
    const r = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_completion_tokens: 3,
                                                     temperature: 0, ignore_eos: true });
    eq(r.usage.completion_tokens, 3, 'completion_tokens');
    eq(r.choices[0].finish_reason, 'length', 'finish_reason');
});

await check('chat: n, seed', async () => {
    const ask = () => client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, n: 3, max_tokens: 10, seed: 11,
                                                       temperature: 1 });
    const a = await ask(), b = await ask();
    checkChat(a, 3);
    eq(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content), 'same seed, same choices');
});

await check('chat: stop', async () => {
    const full = (await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 16,
                                                         temperature: 0, ignore_eos: true })).choices[0].message.content;
    const stop = full.slice(3, 6);
    assert(stop.length === 3, `a stop string from ${JSON.stringify(full)}`);
    const r = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 16, temperature: 0,
                                                     stop, ignore_eos: true });
    eq(r.choices[0].message.content, full.slice(0, full.indexOf(stop)), 'cut before the stop string');
    eq(r.choices[0].finish_reason, 'stop', 'finish_reason');
});

await check('chat: logprobs + top_logprobs', async () => {
    const r = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 5, temperature: 0,
                                                     logprobs: true, top_logprobs: 2, ignore_eos: true });
    const lp = r.choices[0].logprobs;
    assert(lp && Array.isArray(lp.content), 'logprobs.content');
    assert('refusal' in lp && lp.refusal === null, 'logprobs.refusal is null (a required field)');
    eq(lp.content.length, 5, 'a token a generated token');
    for (const t of lp.content) {
        assert(typeof t.token === 'string' && typeof t.logprob === 'number' && t.logprob <= 0, 'token, logprob');
        if (!t.token.includes('\uFFFD')) eq(t.bytes, [...Buffer.from(t.token)], 'bytes are the token text');
        eq(t.top_logprobs.length, 2, 'top_logprobs');
        assert(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob, 'most likely first');
        assert(t.top_logprobs[0].logprob >= t.logprob - 1e-6, 'greedy picks the likeliest');
    }
    eq(spell(lp.content.map((t) => t.token)), r.choices[0].message.content, 'tokens spell the content');
    const shown = lp.content.filter((t) => !/^<\|.*\|>$/.test(t.token));
    eq(Buffer.concat(shown.map((t) => Buffer.from(t.bytes))).toString('utf8'), r.choices[0].message.content,
       'bytes join into the content');
    const e = await expectError(sdk.BadRequestError, () => client.chat.completions.create({ model: MODEL_ID,
        messages: MESSAGES, top_logprobs: 2, max_tokens: 2 }), 'top_logprobs without logprobs');
    checkErrorShape(e, 400, 'invalid_request_error');
});

await check('chat: response_format and forced tool calls are refused', async () => {
    const tools = [{ type: 'function', function: { name: 'get_time', description: 'the time', parameters: { type: 'object',
                                                                                                          properties: {} } } }];
    for (const extra of [{ response_format: { type: 'json_object' } },
                         { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } } },
                         { tools, tool_choice: 'required' },
                         { tools, tool_choice: { type: 'function', function: { name: 'get_time' } } }]) {
        const e = await expectError(sdk.BadRequestError, () => client.chat.completions.create({ model: MODEL_ID,
            messages: MESSAGES, max_tokens: 2, ...extra }), JSON.stringify(extra).slice(0, 60));
        checkErrorShape(e, 400, 'invalid_request_error');
    }
    const ok = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 2, tools,
                                                      tool_choice: 'auto', response_format: { type: 'text' } });
    checkChat(ok, 1);
});

await check('chat: stream with include_usage', async () => {
    const stream = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 12,
        temperature: 0, stream: true, stream_options: { include_usage: true } });
    const chunks = await collect(stream, 'chat.completion.chunk');
    const last = chunks[chunks.length - 1];
    eq(last.choices, [], 'the usage chunk has no choices');
    checkUsage(last.usage, 'usage chunk');
    chunks.slice(0, -1).forEach((c) => eq(c.usage, null, 'other chunks carry "usage": null'));
    const per = byChoice(chunks.slice(0, -1), 1)[0];
    eq(per[0].delta.role, 'assistant', 'the first delta has the role');
    per.slice(1).forEach((ch) => assert(!('role' in ch.delta), 'later deltas have no role'));
    const text = per.map((ch) => ch.delta.content ?? '').join('');
    const whole = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 12, temperature: 0 });
    eq(text, whole.choices[0].message.content, 'the deltas spell the answer');
    eq(last.usage, whole.usage, 'usage as unstreamed');
    assert(chunks[0].id.startsWith('chatcmpl-'), 'id');
});

await check('chat: stream without include_usage, n 2, logprobs', async () => {
    const stream = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 6, n: 2,
        seed: 5, stream: true, logprobs: true, top_logprobs: 1, ignore_eos: true });
    const chunks = await collect(stream, 'chat.completion.chunk');
    chunks.forEach((c) => assert(!('usage' in c) || c.usage === null, 'no usage'));
    const per = byChoice(chunks, 2);
    per.forEach((list, k) => {
        eq(list[0].delta.role, 'assistant', `choice ${k}: role first`);
        const tokens = list.flatMap((ch) => ch.logprobs?.content ?? []);
        eq(tokens.length, 6, `choice ${k}: every token's logprob once`);
        eq(spell(tokens.map((t) => t.token)), list.map((ch) => ch.delta.content ?? '').join(''), 'tokens spell it');
    });
});

await check('chat: stream through the SDK helper (stream())', async () => {
    const runner = client.chat.completions.stream({ model: MODEL_ID, messages: MESSAGES, max_tokens: 8, temperature: 0 });
    const final = await runner.finalChatCompletion();
    const whole = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 8, temperature: 0 });
    eq(final.choices[0].message.content, whole.choices[0].message.content, 'the accumulated message');
    eq(final.choices[0].finish_reason, whole.choices[0].finish_reason, 'finish_reason');
});

await check('completions: stream with include_usage, n 2, echo', async () => {
    const stream = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 5, n: 2, seed: 9,
        stream: true, stream_options: { include_usage: true }, echo: true, logprobs: 1, ignore_eos: true });
    const chunks = await collect(stream, 'text_completion');
    const last = chunks[chunks.length - 1];
    eq(last.choices, [], 'usage chunk without choices');
    checkUsage(last.usage, 'usage');
    chunks.slice(0, -1).forEach((c) => eq(c.usage, null, 'other chunks carry "usage": null'));
    const per = byChoice(chunks.slice(0, -1), 2);
    const whole = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 5, n: 2, seed: 9,
                                                    echo: true, logprobs: 1, ignore_eos: true });
    per.forEach((list, k) => {
        eq(list.map((ch) => ch.text).join(''), whole.choices[k].text, `choice ${k}: text as unstreamed`);
        const toks = list.flatMap((ch) => ch.logprobs?.tokens ?? []);
        eq(toks, whole.choices[k].logprobs.tokens, `choice ${k}: tokens as unstreamed`);
    });
    eq(last.usage, whole.usage, 'usage as unstreamed');
});

await check('streams end with data: [DONE] and are text/event-stream', async () => {
    const res = await fetch(`${BASE}/v1/chat/completions`, { method: 'POST',
        headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: MODEL_ID, messages: MESSAGES, max_tokens: 3, stream: true }) });
    eq(res.status, 200, 'status');
    assert(res.headers.get('content-type').startsWith('text/event-stream'), 'content-type');
    const body = await res.text();
    const events = body.split('\n\n').filter((e) => e.length);
    eq(events[events.length - 1], 'data: [DONE]', 'the last event');
    events.forEach((e) => assert(e.startsWith('data: '), `an event of data: ${e.slice(0, 40)}`));
});

await check('withResponse(): headers and the parsed body', async () => {
    const { data, response, request_id } = await client.completions
        .create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 2 }).withResponse();
    eq(response.status, 200, 'status');
    assert(response.headers.get('content-type').startsWith('application/json'), 'content-type');
    checkCompletion(data, 1);
    eq(request_id, data.id, 'x-request-id names the response');
    const s = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 2, stream: true })
        .withResponse();
    assert(s.response.headers.get('content-type').startsWith('text/event-stream'), 'stream content-type');
    const chunks = await collect(s.data, 'chat.completion.chunk');
    eq(s.request_id, chunks[0].id, 'a stream\'s x-request-id names it');
    const models = await client.models.list().withResponse();
    eq(models.response.status, 200, 'models status');
});

await check('abort a stream mid-way; the server keeps serving', async () => {
    const ac = new AbortController();
    const stream = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 400,
        stream: true, ignore_eos: true }, { signal: ac.signal });
    let got = 0, aborted = false;
    try {
        for await (const chunk of stream) {
            if (++got === 3) ac.abort();
        }
    } catch (e) {
        aborted = e instanceof sdk.APIUserAbortError || e?.name === 'AbortError';
        if (!aborted) throw e;
    }
    assert(got >= 3, 'chunks before the abort');
    assert(aborted || got < 400, 'the stream ended early');
    // The stream's own controller works too.
    const s2 = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 400, stream: true,
                                                 ignore_eos: true });
    let n2 = 0;
    for await (const chunk of s2) if (++n2 === 2) s2.controller.abort();
    assert(n2 < 400, 'the completions stream ended early');
    for (let i = 0; i < 3; i++) {
        const r = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 4, temperature: 0 });
        checkChat(r, 1);
    }
    const health = await fetch(`${BASE}/health`);
    eq(health.status, 200, '/health');
    // The engine let the aborted requests go: nothing left running once they are noticed.
    let running = -1;
    for (let t = 0; t < 50 && running !== 0; t++) {
        const m = await (await fetch(`${BASE}/metrics`, { headers: { Authorization: `Bearer ${KEY}` } })).text();
        running = Number(/^moetrace_num_requests_running (\S+)/m.exec(m)?.[1]);
        if (running !== 0) await new Promise((r) => setTimeout(r, 100));
    }
    eq(running, 0, 'no request left running');
});

await check('errors: BadRequestError with OpenAI\'s error object', async () => {
    const e = await expectError(sdk.BadRequestError, () => client.completions.create({ model: MODEL_ID, prompt: PROMPT,
        max_tokens: -1 }), 'max_tokens -1');
    checkErrorShape(e, 400, 'invalid_request_error');
    assert(e.message.includes('max_tokens'), 'names the field');
    const s = await expectError(sdk.BadRequestError, () => client.chat.completions.create({ model: MODEL_ID,
        messages: MESSAGES, stream: true, temperature: -1 }), 'a refused stream');
    checkErrorShape(s, 400, 'invalid_request_error');
    const m = await expectError(sdk.BadRequestError, () => client.chat.completions.create({ model: MODEL_ID, messages: [] }),
                                'empty messages');
    checkErrorShape(m, 400, 'invalid_request_error');
    const long = await expectError(sdk.BadRequestError, () => client.completions.create({ model: MODEL_ID,
        prompt: Array(info.context_length + 1).fill(5), max_tokens: 1 }), 'prompt past the context');
    checkErrorShape(long, 400, 'invalid_request_error');
});

await check('errors: AuthenticationError for a wrong or missing key', async () => {
    const bad = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: 'wrong', maxRetries: 0 });
    const e = await expectError(sdk.AuthenticationError, () => bad.models.list(), 'wrong key');
    checkErrorShape(e, 401, 'authentication_error');
    const e2 = await expectError(sdk.AuthenticationError, () => bad.chat.completions.create({ model: MODEL_ID,
        messages: MESSAGES, stream: true }), 'wrong key, stream');
    checkErrorShape(e2, 401, 'authentication_error');
    const res = await fetch(`${BASE}/v1/models`);
    eq(res.status, 401, 'no key');
});

await check('errors: NotFoundError for an unknown path', async () => {
    const e = await expectError(sdk.NotFoundError, () => client.get('/no-such-endpoint'), 'unknown path');
    checkErrorShape(e, 404, 'not_found_error');
});

await check('moetrace extensions survive the SDK: routed_experts, matched_stop, top_k', async () => {
    const r = await client.chat.completions.create({ model: MODEL_ID, messages: MESSAGES, max_tokens: 4, temperature: 0,
        ignore_eos: true, return_routed_experts: true, routed_experts_dtype: 'uint8', top_k: 5 });
    const c = r.choices[0];
    checkRouting(c.routed_experts, r.usage.prompt_tokens + r.usage.completion_tokens - 1, info.num_hidden_layers,
                 info.top_k, info.num_experts, 'uint8');
    const stream = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 3, stream: true,
        stream_options: { include_usage: true }, return_routed_experts: true, ignore_eos: true });
    const chunks = await collect(stream, 'text_completion');
    const usage = chunks[chunks.length - 1].usage;
    const per = byChoice(chunks.slice(0, -1), 1)[0];
    const finalChunk = per[per.length - 1];
    checkRouting(finalChunk.routed_experts, usage.prompt_tokens + usage.completion_tokens - 1, info.num_hidden_layers,
                 info.top_k, info.num_experts, 'int32');
    per.slice(0, -1).forEach((ch) => assert(!('routed_experts' in ch), 'routing only in the last chunk'));
    const stopped = await client.completions.create({ model: MODEL_ID, prompt: PROMPT, max_tokens: 16, temperature: 0,
                                                      ignore_eos: true, stop: ['zzzz-never'] });
    assert(!('matched_stop' in stopped.choices[0]) || stopped.choices[0].finish_reason === 'stop', 'matched_stop only on stop');
});

console.log(`# ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
