# op: host.info
$DataB64 = '__FAILOVER_DATA__'
# --- prologue: identical in every template (tests/test_templates.py checks it) ---
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
function Get-Win32Code($Exception) {
    # The Win32 error behind an exception chain (0 when there is none).
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        if ($e -is [ComponentModel.Win32Exception]) {
            return $e.NativeErrorCode
        }
        if ($e -is [IO.IOException] -and ($e.HResult -band 0xFFFF0000) -eq 0x80070000) {
            return $e.HResult -band 0xFFFF
        }
    }
    return 0
}
function Get-ErrorChain($Exception) {
    # Every message of the chain: 'Cannot start service' alone hides the cause (1069, 1058, 1068).
    $messages = @()
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        $text = [string]$e.Message
        $code = Get-Win32Code $e
        if ($code -ne 0 -and $null -eq $e.InnerException) {
            $text = "$text (Win32 error $code)"
        }
        if ($messages -notcontains $text) {
            $messages += $text
        }
    }
    return ($messages -join ' <- ')
}
function Write-Failure($Exception) {
    @{ ok = $false; error = (Get-ErrorChain $Exception) } | ConvertTo-Json -Compress
    exit 1
}
# --- end of prologue ---
try {
    # No .NET calls and no [ordered] here: host.info must answer under Constrained Language Mode to report it.
    $policies = @(Get-ExecutionPolicy -List | ForEach-Object { @{ scope = [string]$_.Scope; policy = [string]$_.ExecutionPolicy } })
    @{
        ok                 = $true
        hostname           = [string]$env:COMPUTERNAME
        ps_version         = [string]$PSVersionTable.PSVersion
        language_mode      = [string]$ExecutionContext.SessionState.LanguageMode
        execution_policies = $policies
    } | ConvertTo-Json -Compress -Depth 4
}
catch {
    Write-Failure $_.Exception
}
