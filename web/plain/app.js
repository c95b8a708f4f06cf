// The plain page: sign in, generate with live progress, save to the gallery, like works.
// No build step: a module script talking to the gateway's JSON API and /ws.

const TOKEN_KEY = "aigc.accessToken";
const USER_KEY = "aigc.user";
const $ = (id) => document.getElementById(id);

const state = {
  token: localStorage.getItem(TOKEN_KEY),
  user: JSON.parse(localStorage.getItem(USER_KEY) || "null"),
  socket: null,
  reconnectDelay: 1000,
  reconnectTimer: null,
  job: null, // {id, lastEventId, done}: the job this page started
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "NETWORK", "网络错误，请稍后重试 Network error, try again.");
  }
  const payload = await response.json().catch(() => null);
  if (!response.ok || !payload || payload.success === false) {
    const error = payload?.error ?? {};
    if (response.status === 401 && state.token) signOut();
    throw new ApiError(response.status, error.code ?? "HTTP_ERROR", error.message ?? `HTTP ${response.status}`);
  }
  return payload.data;
}

function showError(element, error) {
  element.textContent = error ? error.message : "";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

// ---- account -----------------------------------------------------------

function signIn(session) {
  state.token = session.accessToken;
  state.user = session.user;
  localStorage.setItem(TOKEN_KEY, state.token);
  localStorage.setItem(USER_KEY, JSON.stringify(state.user));
  showSignedIn();
}

function signOut() {
  state.token = null;
  state.user = null;
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(USER_KEY);
  closeSocket();
  showSignedOut();
}

function showSignedIn() {
  $("auth-section").hidden = true;
  $("account").hidden = false;
  $("studio").hidden = false;
  $("history").hidden = false;
  $("who").textContent = state.user?.username ?? "";
  openSocket();
  loadCredits();
  loadTransactions();
  loadModels();
  loadGallery();
}

function showSignedOut() {
  $("auth-section").hidden = false;
  $("account").hidden = true;
  $("studio").hidden = true;
  $("history").hidden = true;
  loadGallery();
}

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { username, password } = formData(event.target);
  try {
    signIn(await api("POST", "/api/users/login", { username, password }));
    showError($("auth-error"), null);
  } catch (error) {
    showError($("auth-error"), error);
  }
});

$("register-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { username, email, password } = formData(event.target);
  try {
    signIn(await api("POST", "/api/users/register", { username, email, password }));
    showError($("auth-error"), null);
  } catch (error) {
    showError($("auth-error"), error);
  }
});

$("logout").addEventListener("click", signOut);

function showBalance(balance) {
  $("credits-available").textContent = balance.available;
  $("credits-held").textContent = balance.held ? `(冻结 held ${balance.held})` : "";
}

async function loadCredits() {
  try {
    showBalance(await api("GET", "/api/users/credits"));
  } catch (error) {
    showError($("history-error"), error);
  }
}

async function loadTransactions() {
  try {
    const page = await api("GET", "/api/users/credits/transactions?pageSize=20");
    const rows = page.items.map((entry) => {
      const row = document.createElement("tr");
      const signed = (n) => (n > 0 ? `+${n}` : `${n}`);
      const change = entry.heldChange ? `${signed(entry.amount)} (冻结 held ${signed(entry.heldChange)})` : signed(entry.amount);
      const cells = [entry.type, change, entry.balanceAfter, when(entry.createdAt)];
      for (const value of cells) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      row.children[1].className = entry.amount > 0 ? "positive" : entry.amount < 0 ? "negative" : "";
      return row;
    });
    $("transactions").replaceChildren(...rows);
    showError($("history-error"), null);
  } catch (error) {
    showError($("history-error"), error);
  }
}

// ---- live events -------------------------------------------------------

function openSocket() {
  if (!state.token || state.socket) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(state.token)}`);
  state.socket = socket;
  socket.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    handleEvent(event);
  });
  socket.addEventListener("close", (closed) => {
    state.socket = null;
    $("live").classList.remove("on");
    if (closed.code === 4401) {
      signOut();
      return;
    }
    if (!state.token) return;
    state.reconnectTimer = setTimeout(openSocket, state.reconnectDelay);
    state.reconnectDelay = Math.min(state.reconnectDelay * 2, 30000);
  });
}

function closeSocket() {
  clearTimeout(state.reconnectTimer);
  if (state.socket) {
    const socket = state.socket;
    state.socket = null;
    socket.close();
  }
}

function handleEvent(event) {
  const data = event.data ?? {};
  switch (event.type) {
    case "ready":
      state.reconnectDelay = 1000;
      $("live").classList.add("on");
      if (state.job && !state.job.done) {
        state.socket.send(JSON.stringify({ type: "resume", jobId: state.job.id, after: state.job.lastEventId ?? "0" }));
      }
      return;
    case "credits.changed":
      showBalance(data);
      loadTransactions();
      return;
    case "error":
      showError($("generate-error"), data);
      return;
  }
  if (!event.type?.startsWith("job.") || !state.job || data.jobId !== state.job.id) return;
  if (event.id) state.job.lastEventId = event.id;
  handleJobEvent(event.type, data);
}

// ---- generation --------------------------------------------------------

async function loadModels() {
  try {
    const data = await api("GET", "/api/models");
    const options = data.models.map((model) => {
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = model.name;
      return option;
    });
    if (options.length === 0) {
      const none = document.createElement("option");
      none.value = "";
      none.textContent = "暂无在线模型 No worker online";
      options.push(none);
    }
    $("model-select").replaceChildren(...options);
  } catch (error) {
    showError($("generate-error"), error);
  }
}

function setJobStatus(text, percent) {
  $("job").hidden = false;
  $("job-status").textContent = text;
  if (percent !== undefined) $("job-progress").value = percent;
}

function setRunning(running) {
  $("generate-button").disabled = running;
  $("cancel-button").hidden = !running;
}

$("generate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const fields = formData(event.target);
  const [width, height] = fields.size.split("x").map(Number);
  const body = {
    prompt: fields.prompt,
    negativePrompt: fields.negativePrompt,
    width,
    height,
    batchSize: Number(fields.batchSize),
    steps: Number(fields.steps),
  };
  if (fields.model) body.model = fields.model;
  if (fields.seed !== "") body.seed = Number(fields.seed);
  setRunning(true);
  showError($("generate-error"), null);
  $("results").replaceChildren();
  try {
    const data = await api("POST", "/api/generate", body, { "Idempotency-Key": crypto.randomUUID() });
    state.job = { id: data.job.id, lastEventId: null, done: false };
    setJobStatus(`排队中 Queued (#${(data.queuePosition ?? 0) + 1})`, 0);
    for (const warning of data.warnings ?? []) showError($("generate-error"), { message: warning });
  } catch (error) {
    setRunning(false);
    showError($("generate-error"), error);
  }
});

$("cancel-button").addEventListener("click", async () => {
  if (!state.job) return;
  try {
    await api("DELETE", `/api/jobs/${encodeURIComponent(state.job.id)}`);
    setJobStatus("正在取消 Cancelling…");
  } catch (error) {
    showError($("generate-error"), error);
  }
});

function handleJobEvent(type, data) {
  switch (type) {
    case "job.queued":
      setJobStatus(`排队中 Queued (#${(data.position ?? 0) + 1})`, 0);
      break;
    case "job.started":
      setJobStatus("生成中 Running…", 0);
      break;
    case "job.progress":
      setJobStatus(`第 ${data.step}/${data.totalSteps} 步 Step ${data.step} of ${data.totalSteps}`, data.percent);
      break;
    case "job.image":
      addResult(data);
      break;
    case "job.succeeded":
      finishJob(`完成 Done: ${data.images} 张图片, 扣除 ${data.charged} 积分 charged`, 100);
      break;
    case "job.failed":
      finishJob(`失败 Failed: ${data.message} (退还 refunded ${data.refunded})`);
      break;
    case "job.cancelled":
      finishJob(`已取消 Cancelled (退还 refunded ${data.refunded})`);
      break;
  }
}

function finishJob(text, percent) {
  state.job.done = true;
  setJobStatus(text, percent);
  setRunning(false);
}

function addResult(image) {
  if (document.querySelector(`[data-output-id="${CSS.escape(image.outputId)}"]`)) return;
  const figure = $("result-template").content.firstElementChild.cloneNode(true);
  figure.dataset.outputId = image.outputId;
  figure.querySelector("a").href = image.imageUrl;
  const img = figure.querySelector("img");
  img.src = image.thumbnailUrl;
  img.alt = `#${image.index + 1}`;
  figure.querySelector("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const { title, tags } = formData(event.target);
    const button = event.target.querySelector("button");
    const tagList = tags.split(/[,，]/).map((tag) => tag.trim()).filter(Boolean);
    try {
      button.disabled = true;
      await api("POST", "/api/works/save", { outputId: image.outputId, title, tags: tagList, isPublic: true });
      button.textContent = "已保存 Saved";
      showError(figure.querySelector(".error"), null);
      loadGallery();
    } catch (error) {
      button.disabled = false;
      showError(figure.querySelector(".error"), error);
    }
  });
  $("results").append(figure);
}

// ---- gallery -----------------------------------------------------------

async function loadGallery() {
  try {
    const page = await api("GET", "/api/works/gallery?pageSize=24");
    $("gallery").replaceChildren(...page.items.map(renderWork));
    showError($("gallery-error"), null);
  } catch (error) {
    showError($("gallery-error"), error);
  }
}

function renderWork(work) {
  const figure = $("work-template").content.firstElementChild.cloneNode(true);
  figure.querySelector("a").href = work.imageUrl;
  const img = figure.querySelector("img");
  img.src = work.thumbnailUrl;
  img.alt = work.title;
  figure.querySelector(".title").textContent = work.title;
  figure.querySelector(".author").textContent = `@${work.author.username}`;
  const time = figure.querySelector("time");
  time.dateTime = work.createdAt;
  time.textContent = when(work.createdAt);
  const like = figure.querySelector(".like");
  const showLikes = (likes, liked) => {
    like.textContent = `${liked ? "♥" : "♡"} ${likes}`;
    like.classList.toggle("liked", liked);
  };
  showLikes(work.likes, work.isLiked);
  like.addEventListener("click", async () => {
    if (!state.token) {
      showError($("gallery-error"), { message: "请先登录 Sign in to like works." });
      return;
    }
    try {
      const result = await api("POST", `/api/works/${work.id}/like`);
      showLikes(result.likes, result.isLiked);
    } catch (error) {
      showError($("gallery-error"), error);
    }
  });
  return figure;
}

$("refresh-gallery").addEventListener("click", loadGallery);

// ---- start -------------------------------------------------------------

async function loadHealth() {
  try {
    const health = await api("GET", "/api/health");
    const banner = $("demo-banner");
    const notes = [];
    if (health.demoBackend) notes.push(`演示后端 ${health.notice}`);
    if (health.status !== "ok") notes.push("部分服务不可用 Some services are degraded.");
    banner.textContent = notes.join(" · ");
    banner.hidden = notes.length === 0;
  } catch {
    // The banner is informational; the page works without it.
  }
}

loadHealth();
if (state.token) showSignedIn();
else showSignedOut();
