// Small behaviours of every page: copy buttons, and the usage permissions note that stays collapsed once a
// viewer collapses it (remembered in this browser's localStorage, nothing is sent to the server).
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    // Plain http on another host than localhost: the older way, through a selection.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var done = document.execCommand("copy");
    document.body.removeChild(area);
    return done ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function wireCopyButtons() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      var label = button.textContent;
      var status = document.createElement("span");
      status.className = "copy-status";
      status.setAttribute("role", "status");
      button.insertAdjacentElement("afterend", status);
      button.addEventListener("click", function () {
        var source = document.querySelector(button.getAttribute("data-copy"));
        if (!source) return;
        copyText(source.textContent).then(
          function () { status.textContent = "Copied"; button.setAttribute("data-copied", "true"); },
          function () { status.textContent = "Copy failed: select the text and copy it by hand"; }
        );
        window.setTimeout(function () { status.textContent = ""; button.textContent = label; }, 4000);
      });
    });
  }

  var NOTE_KEY = "connectors-admin.role-note-collapsed";

  function rememberRoleNote() {
    var note = document.querySelector("[data-role-note]");
    if (!note) return;
    try {
      if (window.localStorage.getItem(NOTE_KEY) === "true") note.open = false;
      note.addEventListener("toggle", function () {
        window.localStorage.setItem(NOTE_KEY, note.open ? "false" : "true");
      });
    } catch (error) {
      // Storage disabled (private mode, a policy): the note simply opens every time.
    }
  }

  // The viewer's time zone (connectors/viewer_time_zone.py): remembered in a cookie from the browser's own on the
  // first visit, and the page shown again in it once if it was rendered in another zone.
  function rememberTimeZone() {
    var zone;
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (error) { return; }
    if (!zone || /(?:^|; )tz=/.test(document.cookie)) return;
    document.cookie = "tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax" +
      (window.location.protocol === "https:" ? "; secure" : "");
    var shown = document.documentElement.getAttribute("data-tz");
    // Only where nothing was typed or posted yet: the sign-in page, which is where a first visit starts, or a page
    // with no form. replace(): a GET of the same address, never a form resubmitted.
    var untouched = !document.querySelector("form[method=post]") || document.querySelector("#id_username");
    if (shown && shown !== zone && !/[?&]tz=/.test(window.location.search) && untouched) {
      window.location.replace(window.location.href);
    }
  }

  // Each cell learns its column's heading, shown before it when a phone turns rows into cards (static/css/app.css).
  // A cell spanning columns (an empty-table message) is left unlabelled.
  function labelTableCells() {
    document.querySelectorAll("table.table").forEach(function (table) {
      var headings = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) {
        return th.textContent.replace(/[▲▼]/g, "").replace(/\s+/g, " ").trim();
      });
      if (!headings.length) return;
      table.querySelectorAll("tbody tr, tfoot tr").forEach(function (row) {
        var column = 0;
        Array.prototype.forEach.call(row.children, function (cell) {
          var span = cell.colSpan || 1;
          if (span === 1 && !cell.hasAttribute("data-label")) {
            cell.setAttribute("data-label", headings[column] || "");
            // The cell's content in one box, so that a card can set it beside its label (display: contents on
            // wider screens: the table is laid out as if it were not there).
            var value = document.createElement("div");
            value.className = "cell-value";
            while (cell.firstChild) value.appendChild(cell.firstChild);
            cell.appendChild(value);
          }
          column += span;
        });
      });
    });
    // A table still wider than its box (a very narrow window) scrolls; a keyboard must reach that scroll too.
    document.querySelectorAll(".table-wrap").forEach(function (wrap) {
      if (wrap.scrollWidth > wrap.clientWidth + 1 && !wrap.hasAttribute("tabindex")) {
        wrap.setAttribute("tabindex", "0");
        if (!wrap.hasAttribute("aria-label")) {
          var caption = wrap.querySelector("caption");
          wrap.setAttribute("role", "region");
          wrap.setAttribute("aria-label", caption ? caption.textContent.trim() : "Table (scrolls sideways)");
        }
      }
    });
  }

  function start() {
    rememberTimeZone();
    labelTableCells();
    wireCopyButtons();
    rememberRoleNote();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
