// Minimal status page: the full webphone arrives with its own issue.
const $ = (id) => document.getElementById(id);
const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws${location.search}`);
let user = "";
ws.onmessage = (ev) => {
  const msg = JSON.parse(ev.data);
  $("log").textContent += ev.data + "\n";
  const p = msg.params || {};
  switch (msg.method) {
    case "registrationStateChanged":
      $("connection").textContent = p.state === "accepted" ? "Connected" : "No free line — try again later";
      break;
    case "sipUserNameReceived":
      user = p.user;
      break;
    case "phoneLineStateChanged":
      $("line").textContent = {
        registering: "Registering…",
        registered: `Registered as ${user}`,
        registrationFailed: `Registration failed (${p.code ?? "?"})`,
        unregistering: "Unregistering…",
        unregistered: "Unregistered",
      }[p.state] ?? p.state;
      break;
  }
};
ws.onclose = (ev) => { if (ev.code !== 1013) $("connection").textContent = `Disconnected (${ev.code})`; };
