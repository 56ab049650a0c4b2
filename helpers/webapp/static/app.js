// Preview, one photo at a time (camera or gallery), drag-and-drop; the form works without it.
(function () {
  const form = document.getElementById("upload-form");
  const camera = document.getElementById("camera-input");
  const gallery = document.getElementById("image-input");
  const zone = document.getElementById("drop-zone");
  const preview = document.getElementById("preview");
  const submit = document.getElementById("submit");

  function showPreview(file) {
    if (!file || !file.type.startsWith("image/")) { preview.hidden = true; return; }
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  }
  [[camera, gallery], [gallery, camera]].forEach(([input, other]) => {
    input.addEventListener("change", () => {
      other.value = "";
      showPreview(input.files[0]);
    });
  });
  ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
  }));
  zone.addEventListener("drop", (event) => {
    if (!event.dataTransfer.files.length) return;
    gallery.files = event.dataTransfer.files;
    camera.value = "";
    showPreview(gallery.files[0]);
    form.requestSubmit();
  });
  form.addEventListener("submit", () => {
    submit.disabled = true;
    submit.textContent = "Analysing\u2026";
  });
})();
