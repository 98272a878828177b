// MathJax 3 settings for the notes site; loaded before the vendored mathjax/tex-svg-full.js.
//
// Only math inside these elements is typeset, so a dollar sign in prose or code is never taken
// for math:
//   .arithmatex: Markdown pages; pymdownx.arithmatex (generic mode) writes each formula as
//     <span class="arithmatex">\( ... \)</span> or <div class="arithmatex">\[ ... \]</div>;
//   .jp-RenderedMarkdown, .jp-RenderedLatex: notebook pages; mkdocs-jupyter keeps $...$ and
//     $$...$$ as written in Markdown cells and LaTeX outputs;
//   .md-nav__link, .md-header__topic, .md-footer__title: page titles and table-of-contents entries
//     of headings that contain math.
window.MathJax = {
  startup: {
    elements: [
      ".arithmatex",
      ".jp-RenderedMarkdown",
      ".jp-RenderedLatex",
      ".md-nav__link",
      ".md-header__topic",
      ".md-footer__title",
    ],
  },
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true, // \$ is a literal dollar sign
    processEnvironments: true, // \begin{align} ... \end{align} without delimiters
    tags: "ams", // \tag{3.4} and numbered AMS environments; \label / \eqref work on a page
    // An undefined macro becomes a MathJax error (which the site test detects) instead of
    // being shown silently in red.
    packages: { "[-]": ["noundefined"] },
  },
  svg: { fontCache: "global" },
};
