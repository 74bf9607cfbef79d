// The job page's curves: polls the job's metrics every 1.5 s and redraws them with uPlot until the job ends.
(function () {
  "use strict";
  const lossEl = document.getElementById("loss-chart");
  if (!lossEl) return;
  const rewardEl = document.getElementById("reward-chart");
  const note = document.getElementById("chart-note");
  const charts = {};
  const STEP_INCREMENTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];  // whole steps

  function draw(key, target, title, series, data) {
    if (charts[key]) {
      charts[key].setData(data);
      return;
    }
    const width = Math.max(320, target.parentElement.clientWidth - 16);
    charts[key] = new uPlot({
      title: title, width: width, height: 240, scales: { x: { time: false } },
      axes: [{ label: "step", incrs: STEP_INCREMENTS }, {}], series: [{ label: "step" }].concat(series),
    }, data, target);
  }

  async function tick() {
    let done = false;
    try {
      const resp = await fetch(lossEl.dataset.metrics, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (resp.redirected || !resp.ok) {
        done = resp.redirected || resp.status === 404;  // signed out or gone: stop polling
      } else {
        const m = await resp.json();
        done = m.terminal;
        if (m.step.length) {
          draw("loss", lossEl, "Loss", [
            { label: "training loss", stroke: "#1f6feb", width: 2 },
            { label: "validation loss", stroke: "#d1242f", width: 2, spanGaps: true, points: { show: true } },
          ], [m.step, m.train_loss, m.valid_loss]);
          if (m.reward) {
            rewardEl.hidden = false;
            draw("reward", rewardEl, "Reward", [{ label: m.reward_label, stroke: "#1a7f37", width: 2 }], [m.step, m.reward]);
          }
          lossEl.dataset.points = String(m.step.length);
          note.textContent = m.step.length + " steps logged" + (done ? "." : " (updating)…");
        } else if (done) {
          note.textContent = "No training step was logged.";
        }
      }
    } catch (err) {
      // A dropped connection or a half-written response: try again at the next tick.
    }
    if (!done) setTimeout(tick, 1500);
  }
  tick();
})();
