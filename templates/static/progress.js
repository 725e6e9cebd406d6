(function () {
  "use strict";
  var forms = document.querySelectorAll("form[data-progress]");
  Array.prototype.forEach.call(forms, function (form) {
    var box = document.getElementById(form.getAttribute("data-progress"));
    if (!box || !window.FormData || !window.XMLHttpRequest) { return; }
    var meter = box.querySelector("progress");
    var text = box.querySelector("[data-progress-text]");
    form.setAttribute("data-enhanced", "1");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button[type=submit]");
      var started = Date.now();
      var xhr = new XMLHttpRequest();
      if (button) { button.disabled = true; }
      box.hidden = false;
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable || e.total === 0) { return; }
        var done = e.loaded / e.total;
        var left = done > 0 ? ((Date.now() - started) / 1000) * (1 - done) / done : 0;
        meter.value = Math.round(done * 100);
        text.textContent = Math.round(done * 100) + "% sent" +
          (done < 1 && left >= 1 ? ", about " + Math.ceil(left) + " s left" : "");
      };
      xhr.upload.onload = function () {
        meter.value = 100;
        text.textContent = "Sent. Encrypting and checking\u2026";
      };
      xhr.onload = function () {
        // Show the answer itself: loading its address again would be a
        // second request (and a page shown once, such as a generated
        // access code, would be gone).
        if (xhr.status < 400 && xhr.responseURL) {
          window.history.replaceState(null, "", xhr.responseURL);
        }
        document.open();
        document.write(xhr.responseText);
        document.close();
      };
      xhr.onerror = function () {
        text.textContent = "The upload failed. Check your connection and try again.";
        if (button) { button.disabled = false; }
      };
      xhr.open("POST", form.action);
      xhr.send(new FormData(form));
    });
  });
}());
