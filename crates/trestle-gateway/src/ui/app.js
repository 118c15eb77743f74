// Trestle's UI: the few things plain HTML cannot do.
document.addEventListener("DOMContentLoaded", () => {
  // A table row with data-href opens its page (links inside it still work).
  document.querySelectorAll("tr[data-href]").forEach((row) => {
    row.addEventListener("click", (e) => {
      if (e.target.closest("a, button, input, select")) return;
      window.location.href = row.dataset.href;
    });
  });
  // Inputs with data-remember keep their value across pages (the reviewer's name).
  document.querySelectorAll("input[data-remember]").forEach((input) => {
    const key = "trestle." + input.dataset.remember;
    if (!input.value) input.value = localStorage.getItem(key) || "";
    input.addEventListener("change", () => localStorage.setItem(key, input.value));
    input.form && input.form.addEventListener("submit", () => localStorage.setItem(key, input.value));
  });
});
