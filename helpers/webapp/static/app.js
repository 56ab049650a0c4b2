// Drag-and-drop and a preview; the form also works without JavaScript.
(function () {
  const form = document.getElementById("upload-form");
  const input = document.getElementById("image-input");
  const zone = document.getElementById("drop-zone");
  const preview = document.getElementById("preview");

  function showPreview(file) {
    if (!file || !file.type.startsWith("image/")) { preview.hidden = true; return; }
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  }
  input.addEventListener("change", () => showPreview(input.files[0]));
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
    input.files = event.dataTransfer.files;
    showPreview(input.files[0]);
    form.requestSubmit();
  });
})();
