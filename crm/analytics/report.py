"""The visual report: one self-contained HTML file (styles, script and data inline; nothing fetched from any
host) with the RFM grid, the lifecycle funnel, segment sizes over time, the CLV distribution and the channel
mix. `c360 analytics report --output report.html` writes it; it opens offline in any browser.

The data is a handful of aggregate queries (no per-customer rows, no PII); the page's script draws SVG.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm.analytics.config import STAGES, AnalyticsConfig

QUERIES = {
    "grid": "select r_score as r, f_score as f, min(rfm_cell) as cell, count(*) as n from customer_metrics"
    " where r_score is not null group by 1, 2 order by 1, 2",
    "stages": "select lifecycle_stage as stage, count(*) as n from customer_metrics group by 1",
    "tiers": "select value_tier as tier, count(*) as n, coalesce(sum(net_spent_fen), 0)::bigint as fen"
    " from customer_metrics where value_tier is not null group by 1",
    "segments": "select s.code, s.name, z.day, z.size from segment s join segment_size z on z.segment_id = s.id"
    " where z.day > current_date - 366 order by s.code, z.day",
    # Twenty equal bins from zero to the 99th percentile (the last bin takes the rest).
    "clv": """
with p as (select percentile_cont(0.99) within group (order by clv_predicted_fen) as top
           from customer_metrics where clv_predicted_fen is not null)
select least(width_bucket(m.clv_predicted_fen, 0, greatest(p.top, 1), 20), 20) as bin, count(*) as n,
       max(p.top) as top
from customer_metrics m, p where m.clv_predicted_fen is not null group by 1 order by 1""",
    "channels": "select o.channel_code as channel, count(*) as orders, coalesce(sum(o.paid_fen), 0)::bigint as fen"
    " from orders o join golden_customer g on g.id = o.customer_id and g.status = 'active'"
    " where o.status <> 'cancelled' group by 1 order by 2 desc",
    "preferred": "select preferred_channel as channel, count(*) as n from customer_metrics"
    " where preferred_channel is not null group by 1",
    "customers": "select count(*) as n, count(*) filter (where order_count > 0) as buyers,"
    " coalesce(sum(net_spent_fen), 0)::bigint as fen from customer_metrics",
    "models": "select kind, fitted_at, parameters from analytics_model",
}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float | int | str) or value is None:
        return value
    if isinstance(value, dict | list):
        return value
    return float(value)


async def report_data(engine: AsyncEngine, config: AnalyticsConfig, now: datetime) -> dict[str, Any]:
    """Everything the page draws, as plain JSON-able values."""
    out: dict[str, Any] = {"generated_at": now.isoformat(), "rule_version": config.version}
    async with engine.connect() as conn:
        for key, sql in QUERIES.items():
            found = (await conn.execute(sa.text(sql))).mappings().all()
            out[key] = [{k: _plain(v) for k, v in r.items()} for r in found]
    out["stage_order"] = list(STAGES)
    out["cells"] = config.rfm.names()
    return out


STYLE = """
body { font: 14px/1.45 system-ui, "PingFang SC", "Microsoft YaHei", sans-serif; margin: 24px; color: #1d2733; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0 0 10px; }
.meta { color: #5b6b7b; margin-bottom: 18px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 18px; }
.chart { border: 1px solid #dde3ea; border-radius: 8px; padding: 14px; background: #fff; }
.chart svg { width: 100%; height: auto; } .empty { color: #8a97a5; }
text { font-size: 11px; fill: #1d2733; } .legend { font-size: 12px; color: #5b6b7b; }
"""

SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const palette = ["#2f6fd6", "#e0803a", "#3aa57a", "#c44b6c", "#8a63c9", "#d1b02c", "#4aa3b8", "#7d8b99"];
  function el(name, attrs, parent, text) {
    const node = document.createElementNS(NS, name);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }
  function svg(id, w, h) {
    const box = document.querySelector("#" + id + " .plot");
    return el("svg", {viewBox: "0 0 " + w + " " + h, role: "img"}, box);
  }
  function done(id, marks) {
    const section = document.getElementById(id);
    section.dataset.rendered = "true";
    section.dataset.marks = String(marks);
    if (!marks) section.querySelector(".plot").insertAdjacentHTML("beforeend", '<p class="empty">No data yet.</p>');
  }
  function bars(id, rows, label, value, fmt) {
    const max = Math.max(1, ...rows.map(value));
    const s = svg(id, 460, 28 * rows.length + 10);
    rows.forEach((r, i) => {
      const w = 300 * value(r) / max;
      el("text", {x: 0, y: 28 * i + 18}, s, label(r));
      el("rect", {x: 110, y: 28 * i + 6, width: Math.max(w, 1), height: 18, fill: palette[i % palette.length]}, s);
      el("text", {x: 116 + w, y: 28 * i + 19}, s, fmt(r));
    });
    done(id, rows.length);
  }
  const yuan = (fen) => (fen / 100).toLocaleString("zh-CN", {maximumFractionDigits: 0});

  // RFM grid: recency score (rows, 5 on top) by frequency score (columns); shade by customers.
  (function () {
    const s = svg("rfm-grid", 460, 330);
    const max = Math.max(1, ...data.grid.map((g) => g.n));
    let marks = 0;
    for (const g of data.grid) {
      const x = 40 + (g.f - 1) * 82, y = 10 + (5 - g.r) * 60;
      const shade = 0.15 + 0.85 * g.n / max;
      el("rect", {x: x, y: y, width: 80, height: 58, fill: "rgba(47,111,214," + shade.toFixed(3) + ")"}, s);
      el("text", {x: x + 4, y: y + 16}, s, data.cells[g.cell] || g.cell);
      el("text", {x: x + 4, y: y + 34}, s, String(g.n));
      marks++;
    }
    for (let i = 1; i <= 5; i++) {
      el("text", {x: 20, y: 44 + (5 - i) * 60}, s, "R" + i);
      el("text", {x: 70 + (i - 1) * 82, y: 322}, s, "F" + i);
    }
    done("rfm-grid", marks);
  })();

  // Lifecycle funnel, in the order stages follow one another.
  const stages = Object.fromEntries(data.stages.map((r) => [r.stage, r.n]));
  bars("lifecycle-funnel", data.stage_order.map((s) => ({stage: s, n: stages[s] || 0})),
       (r) => r.stage, (r) => r.n, (r) => String(r.n));

  // Segment sizes over time: one line per segment.
  (function () {
    const bySegment = {};
    for (const r of data.segments) (bySegment[r.code] = bySegment[r.code] || []).push(r);
    const codes = Object.keys(bySegment);
    const days = [...new Set(data.segments.map((r) => r.day))].sort();
    const max = Math.max(1, ...data.segments.map((r) => r.size));
    const s = svg("segment-sizes", 460, 240 + 18 * codes.length);
    el("line", {x1: 40, y1: 210, x2: 450, y2: 210, stroke: "#8a97a5"}, s);
    codes.forEach((code, i) => {
      const pts = bySegment[code].map((r) => {
        const x = 40 + (days.length > 1 ? 410 * days.indexOf(r.day) / (days.length - 1) : 205);
        return x.toFixed(1) + "," + (210 - 190 * r.size / max).toFixed(1);
      });
      const color = palette[i % palette.length];
      if (pts.length === 1) {
        const [x, y] = pts[0].split(",");
        el("circle", {cx: x, cy: y, r: 4, fill: color}, s);
      }
      el("polyline", {points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2}, s);
      const last = bySegment[code][bySegment[code].length - 1];
      el("text", {x: 40, y: 236 + 18 * i, fill: color}, s, code + " · " + last.size);
    });
    if (days.length) {
      el("text", {x: 40, y: 224}, s, days[0]);
      el("text", {x: 380, y: 224}, s, days[days.length - 1]);
    }
    done("segment-sizes", codes.length);
  })();

  // CLV distribution: customers per bin of predicted 12-month value.
  (function () {
    const s = svg("clv-distribution", 460, 240);
    const max = Math.max(1, ...data.clv.map((b) => b.n));
    const top = data.clv.length ? data.clv[0].top : 0;
    for (const b of data.clv) {
      const h = 190 * b.n / max;
      el("rect", {x: 40 + (b.bin - 1) * 20, y: 200 - h, width: 18, height: Math.max(h, 1), fill: "#3aa57a"}, s);
    }
    el("text", {x: 40, y: 218}, s, "0");
    el("text", {x: 360, y: 218}, s, "¥" + yuan(top) + "+");
    el("text", {x: 40, y: 236}, s, "predicted 12-month value (yuan), customers per bin");
    done("clv-distribution", data.clv.length);
  })();

  // Channel mix: orders and spend by channel.
  bars("channel-mix", data.channels, (r) => r.channel, (r) => r.fen,
       (r) => r.orders + " orders · ¥" + yuan(r.fen));
  document.body.dataset.rendered = "true";
})();
"""


def render(data: dict[str, Any]) -> str:
    """The report page: every byte it needs is in it."""
    payload = json.dumps(data, ensure_ascii=False, default=str).replace("</", "<\\/")
    c = data["customers"][0] if data["customers"] else {"n": 0, "buyers": 0, "fen": 0}
    models = {m["kind"]: m for m in data["models"]}
    fitted = models.get("rfm", {}).get("fitted_at", "never")
    charts = [
        (
            "rfm-grid",
            "RFM grid",
            "Recency score (rows) by frequency score (columns), quintiles over the base.",
        ),
        ("lifecycle-funnel", "Lifecycle funnel", "Customers per lifecycle stage."),
        ("segment-sizes", "Segment sizes over time", "Members per rule segment per day."),
        ("clv-distribution", "CLV distribution", "Predicted 12-month value (BG/NBD + Gamma-Gamma)."),
        ("channel-mix", "Channel mix", "Orders and spend by channel."),
    ]
    sections = "\n".join(
        f'<section class="chart" id="{cid}"><h2>{html.escape(title)}</h2>'
        f'<div class="legend">{html.escape(note)}</div><div class="plot"></div></section>'
        for cid, title, note in charts
    )
    meta = (
        f"{c['n']} customers, {c['buyers']} with purchases, net spend ¥{int(c['fen']) // 100:,}. "
        f"Rules {data['rule_version']}; RFM fitted {fitted}; generated {data['generated_at']}."
    )
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>Customer 360 analytics</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<style>{STYLE}</style></head>
<body><h1>Customer 360 analytics</h1><div class="meta">{html.escape(meta)}</div>
<div class="grid">
{sections}
</div>
<script type="application/json" id="report-data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""
