-- busted output handler: the usual terminal report, then one plain line
-- "N passed, N failed" that CI log readers recognise (errors count as
-- failed), so a run that ran no test is visible as "0 passed, 0 failed".
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.utfTerminal"(options)
  busted.subscribe({ "suite", "end" }, function()
    local failed = handler.failuresCount + handler.errorsCount
    io.write(("\n%d passed, %d failed"):format(handler.successesCount, failed),
             handler.pendingsCount > 0 and (", %d skipped"):format(handler.pendingsCount) or "", "\n")
    io.flush()
    return nil, true
  end, { priority = 2 })
  return handler
end
