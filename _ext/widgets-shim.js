// Loaded before the Jupyter widgets HTML manager on pages that embed widgets
// (nb_ipywidgets_js in _config.yml; copied to _build/html/_vendor/ by scripts/vendor_js.sh).
(function () {
  "use strict";
  // 1. The widget manager's modules compute where their fonts live from their
  //    require.js module path. Point that path at the vendored copy next to this
  //    script (a global `require` object defined before require.js is its config).
  var here = document.currentScript && document.currentScript.src;
  if (here && typeof window.require === "undefined") {
    window.require = {
      paths: { "@jupyter-widgets/html-manager/dist": new URL("html-manager", here).href },
    };
  }
  // 2. The widget manager typesets widget labels with the MathJax 2 API
  //    (MathJax.Hub.Queue); the book uses MathJax 3. Translate the call.
  function installHub() {
    var mj = window.MathJax;
    if (!mj || mj.Hub || typeof mj.typesetPromise !== "function" && !mj.startup) return;
    mj.Hub = {
      Queue: function (job) {
        var el = job && job.length > 2 ? job[2] : undefined;
        var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
        return ready
          .then(function () { return mj.typesetPromise(el ? [el] : undefined); })
          .catch(function (err) { console.warn("MathJax typeset of a widget failed:", err); });
      },
    };
  }
  // MathJax 3 is loaded with "defer", so it is defined by DOMContentLoaded, which
  // comes before the widget manager renders (on load).
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", installHub);
  } else {
    installHub();
  }
})();
