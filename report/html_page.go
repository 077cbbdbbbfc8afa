package report

import "html/template"

// pageTemplate is the HTML report: inline CSS, no script, nothing fetched.
var pageTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>deadlabour report {{.Period}}</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:24px auto;max-width:960px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta,.note{color:#666;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 10px}
.card .v{font-size:20px;font-weight:600}.card .l{color:#555}.card .s{color:#888;font-size:12px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right}th:first-child,td:first-child{text-align:left}
svg{width:100%;height:auto}.axis{stroke:#888}.grid{stroke:#eee}.tick{font-size:11px;fill:#666}.legend{font-size:12px;fill:#333}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px;font-size:12px}
</style></head><body>
<h1>deadlabour report</h1>
<p class="meta">{{.Period}} · by {{.R.Query.By}} · {{.R.Source}}{{if .R.Query.Currency}} · money in {{.R.Query.Currency}}{{end}}{{if .R.Query.Simulated}} · simulated records included{{end}} · generated {{.Generated}}</p>
<h2>Headline</h2>
<div class="cards">
{{range .Heads}}<div class="card"><div class="l">{{.Label}}{{if .Unit}} ({{.Unit}}){{end}}</div><div class="v">{{.Total}}</div>
<div class="s">active (requests): {{.Active}}{{if .Scope}}<br>{{.Scope}}{{end}}{{if .Range}}<br>{{.Range}}{{end}}</div></div>
{{end}}</div>
<p class="note">Large figures are the meters' totals (requests' active share + all idle); "active" is what the records carry.</p>
<h2>Facility energy over time, by model</h2>
{{.Energy}}
<h2>CO2e over time, by model (Scope 2, location-based)</h2>
{{.CO2e}}
<h2>Idle and overcapacity</h2>
{{.IdleChart}}
<p class="note">{{.IdleNote}}</p>
<h2>Intensities</h2>
<table><thead><tr><th>{{.R.Query.By}}</th><th>J/token (GPU)</th><th>Wh/request (facility)</th><th>g CO2e/request</th><th>SCI g/request</th><th>SCI g/1k tokens</th></tr></thead><tbody>
{{range .Intensities}}<tr><td>{{.Key}}</td><td>{{.JPerToken}}</td><td>{{.WhPerReq}}</td><td>{{.GPerReq}}</td><td>{{.SCI}}</td><td>{{.SCIk}}</td></tr>
{{end}}</tbody></table>
<p class="note">SCI (Green Software Foundation, ISO/IEC 21031:2024) = (E×I + M) per R: E×I is <code>co2e_g</code> (Scope 2, location-based), M is <code>embodied_co2e_g</code> (Scope 3), R a request or 1,000 tokens. Group lines count the software's share (the active figures); the TOTAL (meters) line divides everything the meters measured, idle included, by the same requests and tokens.</p>
<h2>Methodology</h2>
<p>Method versions: {{range .R.Methods}}<code>{{.}}</code> {{else}}unknown{{end}}</p>
<p>Factor sources:</p><ul>{{range .R.Factors}}<li><code>{{.}}</code></li>{{else}}<li>unknown</li>{{end}}</ul>
<p class="note">docs/methodology.md explains the attribution; docs/schema.md the fields.</p>
</body></html>
`))
