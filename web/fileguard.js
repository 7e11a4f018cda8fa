// Opened as a file (file://), a browser refuses this page's module script and its WebAssembly, so
// the model never loads. A classic script (allowed there) says so at once, and how to open it.
(function () {
  if (location.protocol !== "file:") return;
  window.__melanomaFile = true;
  function tell() {
    var status = document.getElementById("status");
    var error = document.getElementById("error");
    if (status) status.textContent = "";
    if (error) {
      error.hidden = false;
      error.textContent = "This page cannot run from a file (file://): the browser blocks its model there. " +
        "Serve the book instead — in the repository run `make serve` (or `melanoma serve`) and open the " +
        "address it prints (this machine, port 8000 by default), then the web page from the book.";
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", tell);
  else tell();
})();
