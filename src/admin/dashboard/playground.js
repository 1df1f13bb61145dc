// modelgate dashboard playground: sends a chat through the gateway's own /v1/chat/completions
// with the key the dashboard signed in with, exactly as a client would, and shows the answer as
// it streams, then who served it, the attempts, time to first token, tokens and estimated cost.
// Everything received is rendered as text, never as HTML.
'use strict';

(function () {
  const KEY_SLOT = 'modelgate.masterKey';
  // The gateway's root as the browser sees it (under a base path the dashboard is prefixed too).
  const ROOT = location.pathname.replace(/\/admin\/dashboard.*$/, '');
  const ADMIN_MODELS = '/admin/api/v1/models';
  const $ = (sel) => document.querySelector(sel);
  // `turns`: the conversation so far ({user, assistant} pairs), sent again with each message.
  const state = { prices: {}, loaded: false, wanted: null, controller: null, turns: [] };

  function headers(extra) {
    const h = Object.assign({ Accept: 'application/json' }, extra || {});
    const key = sessionStorage.getItem(KEY_SLOT) || '';
    if (key) h.Authorization = 'Bearer ' + key;
    return h;
  }

  // '#playground?model=smart' -> 'smart'
  function modelFromHash() {
    const q = location.hash.split('?')[1] || '';
    const m = new URLSearchParams(q).get('model');
    return m || null;
  }

  function onPlayground() {
    return location.hash.startsWith('#playground');
  }

  // The playground is a page of its own: the other sections hide while it shows.
  function showPage() {
    const pg = onPlayground();
    document.querySelectorAll('#app > section').forEach((s) => {
      s.hidden = s.id === 'playground' ? !pg : pg;
    });
    $('#nav-playground').classList.toggle('active', pg);
    $('#nav-models').classList.toggle('active', !pg);
    // The list is the caller's: loaded once the dashboard has signed in.
    if (pg && ready) {
      state.wanted = modelFromHash() || state.wanted;
      loadModels();
    }
  }

  // Every model and virtual model this caller may use: the gateway's own /v1/models list, which
  // is filtered by access exactly as for any client. Prices come from the admin model list.
  async function loadModels() {
    const select = $('#pg-model');
    try {
      const [models, admin] = await Promise.all([
        fetch(ROOT + '/v1/models', { headers: headers() }),
        fetch(ADMIN_MODELS, { headers: headers() }),
      ]);
      if (!models.ok) throw new Error(await errorText(models));
      const list = ((await models.json()).data || []).map((m) => m.id).sort();
      if (admin.ok) {
        for (const m of (await admin.json()).data || []) state.prices[m.id] = m.pricing || null;
      }
      const keep = state.wanted || select.value;
      select.replaceChildren(...list.map((id) => {
        const o = document.createElement('option');
        o.value = id;
        o.textContent = id;
        return o;
      }));
      if (keep && !list.includes(keep)) {
        const o = document.createElement('option');
        o.value = keep;
        o.textContent = keep + ' (not listed for this key)';
        select.prepend(o);
      }
      if (keep) select.value = keep;
      state.wanted = null;
      state.loaded = true;
      // A list that failed before the sign-in has loaded now: its message is stale.
      showError('');
    } catch (e) {
      showError('Could not load the models: ' + e.message);
    }
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      const err = body.error || {};
      return (err.message || ('HTTP ' + res.status)) + (err.code ? ' (' + err.code + ')' : '');
    } catch (_) {
      return 'HTTP ' + res.status;
    }
  }

  function showError(message) {
    const el = $('#pg-error');
    el.textContent = message || '';
    el.hidden = !message;
  }

  function requestBody() {
    const f = $('#pg-form').elements;
    const messages = [];
    const system = f.system.value.trim();
    if (system) messages.push({ role: 'system', content: system });
    for (const t of state.turns) {
      messages.push({ role: 'user', content: t.user });
      messages.push({ role: 'assistant', content: t.assistant });
    }
    messages.push({ role: 'user', content: f.message.value });
    const body = { model: f.model.value, messages, stream: f.stream.checked };
    if (f.temperature.value !== '') body.temperature = Number(f.temperature.value);
    if (f.max_tokens.value !== '') body.max_tokens = Number(f.max_tokens.value);
    if (body.stream) body.stream_options = { include_usage: true };
    return body;
  }

  // Reads an SSE body, calling onEvent with each `data:` payload as it arrives.
  async function readEvents(res, onEvent) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line.startsWith('data:')) onEvent(line.slice(5).trim());
      }
    }
  }

  function showStats(s) {
    $('#pg-stats').hidden = false;
    $('#pg-served').textContent = s.served || '—';
    $('#pg-attempts').textContent = s.attempts || '—';
    $('#pg-ttft').textContent = s.ttft === null ? '—' : Math.round(s.ttft) + ' ms';
    $('#pg-tokens').textContent = s.usage
      ? s.usage.prompt_tokens + ' in · ' + s.usage.completion_tokens + ' out'
      : 'not reported';
    const price = s.served ? state.prices[s.served] : null;
    $('#pg-cost').textContent = s.usage && price
      ? '$' + ((s.usage.prompt_tokens * price.input_per_mtok + s.usage.completion_tokens * price.output_per_mtok) / 1e6).toFixed(6)
      : (s.usage ? 'unpriced' : '—');
  }

  // The earlier turns, above the message box.
  function renderHistory() {
    const list = $('#pg-history');
    list.replaceChildren(...state.turns.flatMap((t) => [['user', 'You', t.user], ['assistant', 'Assistant', t.assistant]]
      .map(([cls, who, text]) => {
        const li = document.createElement('li');
        li.className = cls;
        const label = document.createElement('span');
        label.className = 'who';
        label.textContent = who;
        li.append(label, document.createTextNode(text));
        return li;
      })));
    list.hidden = state.turns.length === 0;
  }

  async function send(ev) {
    ev.preventDefault();
    showError('');
    const answer = $('#pg-answer');
    renderHistory();
    answer.textContent = '';
    $('#pg-stats').hidden = true;
    const body = requestBody();
    if (!body.model) return showError('Choose a model.');
    const sendBtn = $('#pg-send');
    sendBtn.disabled = true;
    $('#pg-stop').hidden = !body.stream;
    state.controller = new AbortController();
    const started = performance.now();
    const stats = { served: null, attempts: null, ttft: null, usage: null };
    try {
      const res = await fetch(ROOT + '/v1/chat/completions', {
        method: 'POST',
        headers: headers({ 'Content-Type': 'application/json' }),
        body: JSON.stringify(body),
        signal: state.controller.signal,
      });
      stats.served = res.headers.get('x-modelgate-model');
      stats.attempts = res.headers.get('x-modelgate-attempts');
      if (!res.ok) {
        showError(await errorText(res));
        showStats(stats);
        return;
      }
      if (body.stream) {
        await readEvents(res, (data) => {
          if (data === '[DONE]') return;
          let chunk;
          try { chunk = JSON.parse(data); } catch (_) { return; }
          if (chunk.usage) stats.usage = chunk.usage;
          for (const c of chunk.choices || []) {
            const text = c.delta && c.delta.content;
            if (text) {
              if (stats.ttft === null) stats.ttft = performance.now() - started;
              answer.textContent += text;
            }
          }
        });
      } else {
        const whole = await res.json();
        stats.ttft = performance.now() - started;
        stats.usage = whole.usage || null;
        const msg = whole.choices && whole.choices[0] && whole.choices[0].message;
        answer.textContent = (msg && msg.content) || '';
      }
      showStats(stats);
      // The exchange joins the conversation; the next message is sent after it.
      state.turns.push({ user: body.messages[body.messages.length - 1].content, assistant: answer.textContent });
      $('#pg-message').value = '';
    } catch (e) {
      if (e.name === 'AbortError') {
        showStats(stats);
        showError('Stopped.');
      } else {
        showError(e.message);
      }
    } finally {
      sendBtn.disabled = false;
      $('#pg-stop').hidden = true;
      state.controller = null;
    }
  }

  $('#pg-form').addEventListener('submit', send);
  $('#pg-stop').addEventListener('click', () => state.controller && state.controller.abort());
  $('#pg-new').addEventListener('click', () => {
    state.turns = [];
    renderHistory();
    $('#pg-answer').textContent = '';
    $('#pg-stats').hidden = true;
    showError('');
  });
  window.addEventListener('hashchange', showPage);
  // The dashboard signals when it has signed in and loaded; the list then reflects the key.
  let ready = false;
  document.addEventListener('modelgate:ready', () => {
    ready = true;
    showPage();
  });
  showPage();
})();
