// Renders TeX with KaTeX for docs/literate/tex.py: one JSON request per input line
// ({"tex": ..., "display": true|false}), one JSON answer per output line ({"html": ...} or
// {"error": ...}). Started once per build; the path of katex.js is the first argument.
"use strict";
const readline = require("readline");
const katex = require(process.argv[2]);

const options = {
  throwOnError: true,
  // Input that real LaTeX would reject (or treat differently) is an error, not a guess.
  strict: "error",
  trust: false,
  output: "htmlAndMathml",
};

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  let answer;
  try {
    const { tex, display } = JSON.parse(line);
    answer = { html: katex.renderToString(tex, { ...options, displayMode: Boolean(display) }) };
  } catch (e) {
    answer = { error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
