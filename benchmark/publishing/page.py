"""A suite's ``index.html``: one self-contained page (inline CSS and SVG, no script, no
network) with the suite's description, the command that reproduces it, the tables and figures."""
import jinja2

PAGE = jinja2.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kdbench · {{ about.suite | e }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
.meta { color: #555; }
pre { background: #f4f4f4; padding: 0.7em; overflow-x: auto; }
.scroll { max-height: 36em; overflow: auto; border: 1px solid #ddd; margin-bottom: 1em; }
table.board { border-collapse: collapse; font-size: 0.85em; }
table.board th, table.board td { padding: 0.25em 0.6em; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
table.board th { background: #fafafa; }
table.board caption { caption-side: top; text-align: left; color: #555; padding: 0.3em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; max-width: 40em; }
figure.trigger img { image-rendering: pixelated; }
</style>
</head>
<body>
<h1>kdbench · {{ about.suite | e }}</h1>
<p>{{ about.description | e }}</p>
<p class="meta">{{ cells }} · device {{ device | e }}{% if about.date %} · {{ about.date }}{% endif %} · every value is the
mean ± standard deviation over seeds (n = seeds measured); per-seed rows in
<a href="distillation.csv">distillation.csv</a> and <a href="detection.csv">detection.csv</a>, aggregates in
<a href="summary.csv">summary.csv</a>.</p>
{% if about.command %}<h2 id="reproduce">Reproduce</h2>
<pre>{{ about.command | e }}</pre>
{% if definition %}<details><summary>the suite as a registry entry (<code>kdbench run {{ about.suite | e }} --registry FILE</code>)</summary>
<pre>{{ definition | e }}</pre></details>{% endif %}{% endif %}
<h2 id="distillation">Does the backdoor survive distillation?</h2>
<p>ASR: triggered test images (true label other than the target) classified as the target. The control is the same
student distilled by the same method from the clean teacher, measured with the same trigger.</p>
<div class="scroll">{{ distillation_table }}</div>
{% for title, image in survival %}<figure>{{ image }}<figcaption>{{ title | e }}: the student's ASR minus its control's,
per attack and distiller (mean over seeds).</figcaption></figure>{% endfor %}
{% for title, image in accuracy %}<figure>{{ image }}<figcaption>{{ title | e }} (mean over seeds).</figcaption></figure>{% endfor %}
{% if gallery %}<h2 id="triggers">The triggers</h2>
<p>Each attack's trigger on the first test images: clean (top), triggered (middle) and their difference, scaled so that the
largest change is white (bottom). Visibility is measured on the whole test split.</p>
{{ gallery }}{% endif %}
{% if detection_table %}<h2 id="detection">Seen in the teacher, seen in the student?</h2>
<p>AUROC of each detector on the teacher and on its student (0.5 is chance). Model-level detectors score one model;
their AUROC is over the suite's backdoored against clean models.</p>
<div class="scroll">{{ detection_table }}</div>
{% for title, image in transfer %}<figure>{{ image }}<figcaption>{{ title | e }} (mean ± std over seeds).</figcaption></figure>{% endfor %}
{% for title, image in scores %}<figure>{{ image }}<figcaption>{{ title | e }}: one dot per model and seed.</figcaption></figure>{% endfor %}
{% endif %}
{% if failed_table %}<h2 id="failed">Failed</h2>
<div class="scroll">{{ failed_table }}</div>{% endif %}
<p class="meta">Rendered by <code>kdbench report</code> from the CSVs in this folder.</p>
</body>
</html>
""", autoescape=False, keep_trailing_newline=True)

BOARDS = jinja2.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kdbench leaderboards</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 78em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.35em 0.7em; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
th { background: #fafafa; position: sticky; top: 0; }
code { font-size: 0.9em; }
</style>
</head>
<body>
<h1>kdbench leaderboards</h1>
<p>Does a backdoor hidden in a teacher survive knowledge distillation, and can a defender see it? One page per
published suite; values are means over seeds.</p>
<table>
<thead><tr><th>suite</th><th>date</th><th>device</th><th>cells</th><th>headline</th><th>reproduce</th></tr></thead>
<tbody>
{% for board in boards %}<tr><td><a href="{{ board.folder | e }}/index.html">{{ board.suite | e }}</a><br>{{ board.description | e }}</td>
<td>{{ board.date or "–" }}</td><td>{{ board.device | e }}</td><td>{{ board.cells }}</td>
<td>{% for line in board.headline %}{{ line | e }}<br>{% endfor %}</td><td><code>{{ board.command | e }}</code></td></tr>
{% endfor %}</tbody>
</table>
</body>
</html>
""", autoescape=False, keep_trailing_newline=True)
