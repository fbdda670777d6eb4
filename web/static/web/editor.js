// The scheduler's Rhai editor: a <textarea> (the real, labelled control: keyboard, screen
// readers, forms and undo all work as usual) laid over a <pre> of highlighted spans that
// follows it on every input and scroll. No third-party editor and nothing inline (CSP).
//   <div class="editor" data-editor>
//     <pre class="editor-view" aria-hidden="true"><code data-editor-view></code></pre>
//     <textarea class="editor-input">...</textarea>
//   </div>
// Tab inserts four spaces and Enter keeps the line's indentation; Esc then Tab (or
// Shift+Tab) leaves the editor. A Check that reports "line:column" marks that line and its
// link puts the caret there. <pre data-highlight> elements are highlighted read-only.
(function () {
  "use strict";
  var INDENT = "    ";
  var KEYWORDS = {};
  ("fn let const if else while loop for in do until return throw try catch break continue " +
    "switch import export as private this global is_def_fn is_def_var type_of print debug")
    .split(" ").forEach(function (k) { KEYWORDS[k] = true; });
  var BOOLS = { "true": true, "false": true };
  var TOKEN = new RegExp([
    "(\\/\\/[^\\n]*|\\/\\*[\\s\\S]*?(?:\\*\\/|$))", // 1 comments
    "(\"(?:[^\"\\\\\\n]|\\\\.)*\"?|`[^`]*`?|'(?:[^'\\\\\\n]|\\\\.)*'?)", // 2 strings, chars
    "(\\b0x[0-9a-fA-F_]+\\b|\\b\\d[\\d_]*(?:\\.\\d[\\d_]*)?(?:[eE][+-]?\\d+)?\\b)", // 3 numbers
    "(\\b[A-Za-z_][A-Za-z0-9_]*\\b)", // 4 identifiers
  ].join("|"), "g");

  function escape(s) {
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function span(cls, text) {
    return '<span class="' + cls + '">' + escape(text) + "</span>";
  }

  // Rhai source -> HTML of escaped text and token spans.
  function highlight(text) {
    var out = "";
    var last = 0;
    var m;
    TOKEN.lastIndex = 0;
    while ((m = TOKEN.exec(text)) !== null) {
      if (m[0] === "") { TOKEN.lastIndex++; continue; }
      out += escape(text.slice(last, m.index));
      if (m[1]) out += span("tok-com", m[1]);
      else if (m[2]) out += span("tok-str", m[2]);
      else if (m[3]) out += span("tok-num", m[3]);
      else {
        var word = m[4];
        if (KEYWORDS[word]) out += span("tok-kw", word);
        else if (BOOLS[word]) out += span("tok-bool", word);
        else if (/^\s*\(/.test(text.slice(TOKEN.lastIndex))) out += span("tok-fn", word);
        else out += escape(word);
      }
      last = TOKEN.lastIndex;
    }
    return out + escape(text.slice(last));
  }

  // The HTML of `text` with line `line` (1-based; 0: none) marked as the error's.
  function render(text, line) {
    if (!line) return highlight(text);
    var lines = text.split("\n");
    if (line > lines.length) return highlight(text);
    var before = lines.slice(0, line - 1).join("\n");
    var after = lines.slice(line).join("\n");
    return (line > 1 ? highlight(before) + "\n" : "") +
      '<span class="line-err">' + highlight(lines[line - 1]) + "</span>" +
      (line < lines.length ? "\n" + highlight(after) : "");
  }

  function position(text, offset) {
    var upto = text.slice(0, offset).split("\n");
    return { line: upto.length, column: upto[upto.length - 1].length + 1 };
  }

  function offsetOf(text, line, column) {
    var lines = text.split("\n");
    var off = 0;
    for (var i = 0; i < Math.min(line - 1, lines.length); i++) off += lines[i].length + 1;
    var row = lines[Math.min(line, lines.length) - 1] || "";
    return off + Math.max(0, Math.min(column - 1, row.length));
  }

  // Insert at the caret through the browser's editing commands, so undo keeps working.
  function insert(area, text) {
    if (!document.execCommand || !document.execCommand("insertText", false, text)) {
      area.setRangeText(text, area.selectionStart, area.selectionEnd, "end");
      area.dispatchEvent(new Event("input", { bubbles: true }));
    }
  }

  function setup(box) {
    if (box.rbeeEditor) return box.rbeeEditor;
    var area = box.querySelector("textarea");
    var view = box.querySelector("[data-editor-view]");
    var pre = view.parentElement;
    var pos = document.querySelector("[data-editor-pos]");
    var state = { errLine: 0, escaped: false };

    function paint() {
      // A trailing newline keeps the last (empty) line as tall as the textarea's.
      view.innerHTML = render(area.value, state.errLine) + "\n";
      sync();
    }
    function sync() {
      pre.scrollTop = area.scrollTop;
      pre.scrollLeft = area.scrollLeft;
    }
    function caret() {
      if (!pos) return;
      var p = position(area.value, area.selectionStart);
      pos.textContent = "Line " + p.line + ", column " + p.column;
    }

    area.addEventListener("input", function () { state.errLine = 0; paint(); caret(); });
    area.addEventListener("scroll", sync);
    ["keyup", "click", "select", "focus"].forEach(function (ev) { area.addEventListener(ev, caret); });
    area.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { state.escaped = true; return; }
      if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey) {
        if (state.escaped) { state.escaped = false; return; } // leave the editor
        e.preventDefault();
        insert(area, INDENT);
        return;
      }
      state.escaped = false;
      if (e.key === "Enter" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey && !e.isComposing) {
        var start = area.value.lastIndexOf("\n", area.selectionStart - 1) + 1;
        var indent = /^[ \t]*/.exec(area.value.slice(start, area.selectionStart))[0];
        e.preventDefault();
        insert(area, "\n" + indent);
      }
    });
    box.classList.add("editor-ready");
    paint();

    var api = {
      area: area,
      markError: function (line) { state.errLine = line || 0; paint(); },
      goTo: function (line, column) {
        area.focus();
        var off = offsetOf(area.value, line, column);
        area.setSelectionRange(off, off);
        // Scroll the caret's line into view: the line height times the line number.
        var lh = parseFloat(getComputedStyle(area).lineHeight) || 18;
        area.scrollTop = Math.max(0, (line - 3) * lh);
        sync();
        caret();
      },
    };
    box.rbeeEditor = api;
    return api;
  }

  function editors() {
    return Array.prototype.map.call(document.querySelectorAll("[data-editor]"), setup);
  }

  // A Check's result just arrived: mark (or clear) the line it names.
  function showCheck(root) {
    var err = root.querySelector ? root.querySelector("[data-error-line]") : null;
    var line = err ? parseInt(err.getAttribute("data-error-line"), 10) || 0 : 0;
    editors().forEach(function (ed) { ed.markError(line); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    editors();
    document.querySelectorAll("pre[data-highlight]").forEach(function (pre) {
      var code = pre.querySelector("code") || pre;
      code.innerHTML = highlight(code.textContent);
    });
    var result = document.getElementById("check-result");
    if (result) showCheck(result);
  });
  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.target && e.target.id === "check-result") showCheck(e.target);
  });
  document.addEventListener("click", function (e) {
    var link = e.target.closest ? e.target.closest("[data-goto-line]") : null;
    if (!link) return;
    var eds = editors();
    if (!eds.length) return;
    e.preventDefault();
    eds[0].goTo(parseInt(link.getAttribute("data-goto-line"), 10) || 1,
      parseInt(link.getAttribute("data-goto-column"), 10) || 1);
  });
  window.rbeeEditor = { highlight: highlight };
})();
