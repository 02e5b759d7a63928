// llmtrace viewer: a copy button for ids and the auto-refresh toggle. The pages work
// without it; values are never inserted as HTML here.
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) return;
  var text = button.getAttribute("data-copy");
  var done = function () {
    button.textContent = "copied";
    setTimeout(function () { button.textContent = "copy"; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () {});
  } else {
    var range = document.createRange();
    var code = document.getElementById("trace-id");
    range.selectNodeContents(code);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { document.execCommand("copy"); done(); } catch (e) { /* selected: copy by hand */ }
  }
});
document.querySelectorAll("input[data-autosubmit]").forEach(function (input) {
  input.addEventListener("change", function () { input.form.submit(); });
});
